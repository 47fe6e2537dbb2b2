"""echo-process: the WASM echo plugin (plugins/echo) as a process plugin.

Ping → Pong, Echo returns its body, EchoRead reads ``__plugin:echo-process:{key}``
through the node (permission ``kv_read``, its default namespace).
"""

from aspen.plugin_sdk import AspenError, Plugin, Request, reply, value_bytes

plugin = Plugin(
    "echo-process",
    "0.1.0",
    handles=["Ping", "Echo", "EchoRead"],
    description="Ping/Echo and a read of its own namespace, as a process plugin",
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


if __name__ == "__main__":
    plugin.run()
