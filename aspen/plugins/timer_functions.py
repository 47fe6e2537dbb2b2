"""The timer host functions (permission ``timers``): ``aspen_schedule_timer``,
``aspen_cancel_timer``, ``aspen_list_timers``. Registered in the one table of
:mod:`aspen.plugins.host_functions` (which imports this module), so WASM and
process plugins reach them alike. They act at once, on the plugin's record
in the store — also when called from inside ``plugin_on_timer`` or any other
callback: nothing is queued.
"""

from __future__ import annotations

from typing import Any

from aspen.plugins import timers
from aspen.plugins.host_functions import env_kv, host_function
from aspen.plugins.loop_bridge import CallContext, run_on_loop


@host_function("aspen_schedule_timer")
def _schedule_timer(ctx: CallContext, args: dict[str, Any]) -> dict[str, Any]:
    env = ctx.env
    env.gate.require("timers")
    name = timers.check_name(args.get("name"))
    interval = timers.check_interval(args.get("interval_ms"))
    repeating = timers.check_repeating(args.get("repeating", False))
    timer = run_on_loop(ctx, timers.schedule(env_kv(env), env.plugin, name, interval, repeating))
    return {"next_fire_ms": timer.next_fire_ms}


@host_function("aspen_cancel_timer")
def _cancel_timer(ctx: CallContext, args: dict[str, Any]) -> dict[str, Any]:
    env = ctx.env
    env.gate.require("timers")
    name = timers.check_name(args.get("name"))
    return {"cancelled": run_on_loop(ctx, timers.cancel(env_kv(env), env.plugin, name))}


@host_function("aspen_list_timers")
def _list_timers(ctx: CallContext, args: dict[str, Any]) -> dict[str, Any]:
    env = ctx.env
    env.gate.require("timers")
    ts = run_on_loop(ctx, timers.listed(env_kv(env), env.plugin))
    return {"timers": [timers.timer_json(n, t) for n, t in sorted(ts.timers.items())]}
