"""hook probe: a process plugin that subscribes (at init) to the patterns in
PROBE_PATTERNS and keeps every hook event it is handed, in order, in memory,
with the wall-clock time its callback was entered (``entered``, for
benchmarks/bench_hooks.py). ``{Type}Events {"from"?}`` answers them (from
that index on); ``{Type}Call`` makes any host call (``{"method",
"params"}``) and answers its result or error code.
PROBE_SLEEP seconds per event make it a slow subscriber."""

import asyncio
import os
import time

from aspen.plugin_sdk import AspenError, Plugin, reply

NAME, TYPE = os.environ["PROBE_NAME"], os.environ["PROBE_TYPE"]
plugin = Plugin(NAME, "0.1.0", handles=[f"{TYPE}Events", f"{TYPE}Call"])
events: list[dict] = []


@plugin.on("init")
async def init(host, params):
    for pattern in filter(None, os.environ.get("PROBE_PATTERNS", "").split(",")):
        await host.call("hook_subscribe", {"pattern": pattern})
    return {"ok": True}


@plugin.on("hook_event")
async def on_hook_event(host, params):
    params = {**params, "entered": time.time()}
    await asyncio.sleep(float(os.environ.get("PROBE_SLEEP", "0")))
    events.append(params)
    return {"ok": True}


@plugin.handler(f"{TYPE}Events")
def list_events(req):
    return reply(f"{TYPE}Events", {"events": events[req.body.get("from", 0) :]})


@plugin.handler(f"{TYPE}Call")
async def host_call(req):
    try:
        return reply(f"{TYPE}Call", {"ok": await req.host.call(req.body["method"], req.body.get("params", {}))})
    except AspenError as exc:
        return reply(f"{TYPE}Call", {"code": exc.code})


if __name__ == "__main__":
    plugin.run()
