"""echo-process: the WASM echo plugin (plugins/echo) as a process plugin.

Ping → Pong, Echo returns its body, EchoRead reads ``__plugin:echo-process:{key}``
through the node (permission ``kv_read``, its default namespace). EchoTimer
``{"name", "interval_ms", "repeating"}`` schedules a timer (permission
``timers``); each firing counts itself in ``__plugin:echo-process:fired:{name}``.
"""

from aspen.plugin_sdk import AspenError, Host, Plugin, Request, reply, value_bytes

plugin = Plugin(
    "echo-process",
    "0.1.0",
    handles=["Ping", "Echo", "EchoRead", "EchoTimer"],
    description="Ping/Echo, a read of its own namespace and a timer, as a process plugin",
)


@plugin.handler("Ping")
def ping(req: Request) -> dict:
    return reply("Pong")


@plugin.handler("Echo")
def echo(req: Request) -> dict:
    return reply("Echo", req.body)


@plugin.handler("EchoRead")
async def echo_read(req: Request) -> dict:
    name = req.body.get("key")
    if not isinstance(name, str):
        raise AspenError("BAD_REQUEST", "body.key is required")
    key = f"__plugin:echo-process:{name}"
    entry = await req.host.kv_get(key)
    return reply("EchoRead", {"key": key, "value": None if entry is None else value_bytes(entry).decode()})


@plugin.handler("EchoTimer")
async def echo_timer(req: Request) -> dict:
    b = req.body
    fires = await req.host.schedule_timer(b.get("name"), b.get("interval_ms"), b.get("repeating", False))
    return reply("EchoTimer", {"next_fire_ms": fires})


@plugin.on("timer")
async def on_timer(host: Host, event: dict) -> dict:
    key = f"__plugin:echo-process:fired:{event['name']}"
    for _ in range(16):  # compare-and-swap: a slow callback and the next one never lose a count
        entry = await host.kv_get(key)
        count = 0 if entry is None else int(value_bytes(entry))
        if (await host.kv_cas(key, None if entry is None else str(count), str(count + 1)))["succeeded"]:
            return {"ok": True}
    return {"ok": False, "error": "too much contention"}


if __name__ == "__main__":
    plugin.run()
