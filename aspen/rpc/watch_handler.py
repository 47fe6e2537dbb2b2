"""Core handler for WatchCreate/WatchCancel sent as plain RPCs: the watch is
registered on the node's watch hub and its events are read from the SSE
stream at ``stream_path`` (a WebSocket client uses ``/v1/watch/ws`` instead)."""

from __future__ import annotations

from typing import Any

from aspen.errors import AspenError, ErrorCode
from aspen.rpc import catalog as c
from aspen.rpc.handler import RequestContext
from aspen.rpc.typed_handler import TypedHandler


class WatchHandler(TypedHandler):
    name = "core.watch"
    priority = 40
    handles = ("WatchCreate", "WatchCancel")

    async def watch_create(self, body: c.WatchCreate, ctx: RequestContext) -> c.WatchCreateResult:
        watch = await self.node.watches.create(body.prefix, body.start_revision, ctx.caller)
        return c.WatchCreateResult(
            watch_id=watch.id, start_revision=watch.next_revision, stream_path=f"/v1/watch/{watch.id}"
        )

    async def watch_cancel(self, body: c.WatchCancel, ctx: RequestContext) -> c.WatchCancelResult:
        if not self.node.watches.cancel(body.watch_id, ctx.caller):
            raise AspenError(
                ErrorCode.WATCH_NOT_FOUND, f"no watch {body.watch_id} of yours (cancelled, expired or never created)"
            )
        return c.WatchCancelResult(watch_id=body.watch_id, was_cancelled=True)


def create(node: Any) -> WatchHandler:
    return WatchHandler(node)
