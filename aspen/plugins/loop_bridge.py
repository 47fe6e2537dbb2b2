"""How a host function, running on a plugin's worker thread, reaches the
node's event loop: :class:`HostEnv` (what it may reach for one plugin),
:class:`CallContext` (one guest call) and :func:`run_on_loop`.

Async services (KV, blobs) are reached with ``run_coroutine_threadsafe``
onto the node's event loop and waited for at most until the call's
deadline. That cannot deadlock: WASM never runs on the loop thread (checked
here), and the loop never blocks on a WASM call — it awaits a future. The
worker waits for the answer on an :class:`~aspen.handoff.EventCount`
without the GIL.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Coroutine
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aspen.errors import AspenError, ErrorCode
from aspen.handoff import EventCount
from aspen.plugins.gate import PluginGate
from aspen.storage.protocol import BlobStore, KeyValueStore


class HostEnv:
    """What the host functions may reach on behalf of one plugin."""

    def __init__(
        self,
        gate: PluginGate,
        *,
        kv: KeyValueStore | None,
        blobs: BlobStore | None,
        loop: asyncio.AbstractEventLoop,
        loop_thread: int,
        node_info: dict[str, Any],
        signing_key: Ed25519PrivateKey | None,
        max_reply_bytes: int,
    ) -> None:
        self.plugin = gate.plugin
        self.gate = gate
        self.kv = kv
        self.blobs = blobs
        self.loop = loop
        self.loop_thread = loop_thread
        self.node_info = node_info
        self.signing_key = signing_key
        self.max_reply_bytes = max_reply_bytes


class CallContext:
    """Per guest call: whose call it is and when it must be done."""

    __slots__ = ("deadline", "env")

    def __init__(self, env: HostEnv, deadline: float) -> None:
        self.env = env
        self.deadline = deadline


_host_waits = threading.local()  # per worker thread: an EventCount bumped when its host call is answered


def run_on_loop(ctx: CallContext, coro: Coroutine[Any, Any, Any]) -> Any:
    env = ctx.env
    if threading.get_ident() == env.loop_thread:
        coro.close()
        raise AspenError(ErrorCode.INTERNAL, "host function called on the event-loop thread")
    remaining = ctx.deadline - time.monotonic()
    if remaining <= 0:
        coro.close()
        raise AspenError(ErrorCode.TIMEOUT, "the plugin call ran out of time")
    done = getattr(_host_waits, "done", None)
    if done is None:
        done = _host_waits.done = EventCount()
    seen = done.value()
    try:
        fut = asyncio.run_coroutine_threadsafe(coro, env.loop)
    except RuntimeError as exc:  # loop closed: the node is shutting down
        coro.close()
        raise AspenError(ErrorCode.UNAVAILABLE, "the node is shutting down") from exc
    fut.add_done_callback(lambda _: done.bump())
    done.wait(seen, int(remaining * 1e9))  # without the GIL, until the answer or the deadline
    try:
        return fut.result(timeout=max(0.0, ctx.deadline - time.monotonic()))
    except concurrent.futures.TimeoutError as exc:
        fut.cancel()
        raise AspenError(ErrorCode.TIMEOUT, "the plugin call ran out of time") from exc
    except concurrent.futures.CancelledError as exc:
        raise AspenError(ErrorCode.UNAVAILABLE, "the operation was cancelled") from exc
