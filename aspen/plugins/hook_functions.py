"""The host functions of hook subscriptions (permission ``hooks``), for
WASM and process plugins alike: ``aspen_hook_subscribe {"pattern"}``,
``aspen_hook_unsubscribe {"pattern"}``, ``aspen_hook_list {}``. A plugin
only ever changes its own subscriptions (the plugin comes from the call's
context); the store enforces the limit of 16 across nodes
(:mod:`aspen.hooks.subscriptions`)."""

from __future__ import annotations

from typing import Any

from aspen.hooks.topics import check_pattern
from aspen.plugins.hook_subscribers import plugin_subscriptions
from aspen.plugins.host_functions import env_kv, host_function
from aspen.plugins.loop_bridge import CallContext, run_on_loop


@host_function("aspen_hook_subscribe")
def _subscribe(ctx: CallContext, args: dict[str, Any]) -> dict[str, Any]:
    env = ctx.env
    env.gate.require("hooks")
    pattern = check_pattern(args.get("pattern"))
    patterns = run_on_loop(ctx, plugin_subscriptions(env_kv(env)).subscribe(env.plugin, pattern))
    return {"patterns": list(patterns)}


@host_function("aspen_hook_unsubscribe")
def _unsubscribe(ctx: CallContext, args: dict[str, Any]) -> dict[str, Any]:
    env = ctx.env
    env.gate.require("hooks")
    pattern = check_pattern(args.get("pattern"))
    return {"removed": run_on_loop(ctx, plugin_subscriptions(env_kv(env)).unsubscribe(env.plugin, pattern))}


@host_function("aspen_hook_list")
def _list(ctx: CallContext, args: dict[str, Any]) -> dict[str, Any]:
    env = ctx.env
    env.gate.require("hooks")
    store = plugin_subscriptions(env_kv(env))
    subs = run_on_loop(ctx, store.get(env.plugin))
    cursor = run_on_loop(ctx, store.cursor(env.plugin))
    return {
        "patterns": list(subs.patterns),
        "delivered": cursor.delivered,
        "dropped": cursor.dropped,
        "failed": cursor.failed,
        "revision": cursor.revision,
    }
