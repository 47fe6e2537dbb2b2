"""A process plugin's calls into the node: the WASM host functions, unchanged.

Method ``kv_get`` is host function ``aspen_kv_get`` and so on: the same
implementation, arguments, results and error codes, behind the same
:class:`~aspen.plugins.gate.PluginGate` (it is reached through the plugin's
:class:`~aspen.plugins.host_functions.HostEnv`), so there is one gate and no
second copy of a check. The host functions block on the node's loop for
storage, so they run on worker threads, exactly as for a WASM guest.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from typing import Any

import msgspec

from aspen.errors import AspenError, ErrorCode
from aspen.plugins.extism_bridge import _reply
from aspen.plugins.host_functions import IMPLEMENTATIONS, CallContext, HostEnv

PREFIX = "aspen_"


class _Reply(msgspec.Struct):
    ok: msgspec.Raw = msgspec.Raw()
    error: dict[str, Any] | None = None


_decode_reply = msgspec.json.Decoder(_Reply).decode


def methods() -> list[str]:
    """The plugin → node methods, by protocol name."""
    return sorted(name.removeprefix(PREFIX) for name in IMPLEMENTATIONS)


class GatedHostCalls:
    """The ``serve`` of the node's :class:`~aspen.plugins.process.connection.Peer`
    for one plugin. ``timeout``: how long one host call may wait for storage."""

    def __init__(self, env: HostEnv, *, timeout: float, executor: Executor | None = None) -> None:
        self.env = env
        self.timeout = timeout
        self.executor = executor

    async def __call__(self, method: str, params: msgspec.Raw) -> msgspec.Raw:
        name = PREFIX + method
        impl = IMPLEMENTATIONS.get(name)
        if impl is None:
            raise AspenError(ErrorCode.UNKNOWN_REQUEST, f"no host method {method!r}", methods=methods())
        ctx = CallContext(self.env, time.monotonic() + self.timeout)
        loop = asyncio.get_running_loop()
        reply = _decode_reply(await loop.run_in_executor(self.executor, _reply, ctx, name, impl, bytes(params)))
        if reply.error is not None:
            raise AspenError.from_body(reply.error)
        return reply.ok
