"""Calls from a process plugin into the node (docs/plugin-process.md §4).

Each helper is one host method with the arguments of the WASM host function
of the same name (``kv_get`` is ``aspen_kv_get``); a refusal arrives as
:class:`~aspen.errors.AspenError` with the node's code (``KV_PREFIX_DENIED``,
``PERMISSION_DENIED``, ...). Bytes go as text when they are UTF-8, else base64.
"""

from __future__ import annotations

import base64
from typing import Any

import msgspec

from aspen.plugins.process.connection import Peer
from aspen.plugins.process.protocol import raw

_decode = msgspec.json.Decoder().decode


def value_bytes(entry: dict[str, Any]) -> bytes:
    """The value of a KV entry from a result, whichever way it was sent."""
    if "value" in entry:
        return entry["value"].encode()
    return base64.b64decode(entry["value_b64"])


def _bytes_arg(name: str, data: bytes | str) -> dict[str, str]:
    if isinstance(data, str):
        return {name: data}
    try:
        return {name: data.decode()}
    except UnicodeDecodeError:
        return {f"{name}_b64": base64.b64encode(data).decode()}


class Host:
    """The node, as the plugin sees it. ``timeout``: seconds per call."""

    def __init__(self, peer: Peer, timeout: float = 30.0) -> None:
        self.peer = peer
        self.timeout = timeout

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return _decode(await self.peer.call(method, raw(params or {}), self.timeout))

    async def log(self, message: str, level: str = "info") -> None:
        await self.call("log", {"level": level, "message": message})

    async def kv_get(self, key: str) -> dict[str, Any] | None:
        return (await self.call("kv_get", {"key": key}))["kv"]

    async def kv_put(self, key: str, value: bytes | str) -> int:
        return (await self.call("kv_put", {"key": key, **_bytes_arg("value", value)}))["revision"]

    async def kv_delete(self, key: str) -> bool:
        return (await self.call("kv_delete", {"key": key}))["deleted"]

    async def kv_scan(self, prefix: str, limit: int = 100, continuation: str | None = None) -> dict[str, Any]:
        return await self.call("kv_scan", {"prefix": prefix, "limit": limit, "continuation": continuation})

    async def kv_cas(self, key: str, expected: bytes | str | None, new: bytes | str) -> dict[str, Any]:
        args = {"key": key, **_bytes_arg("new", new)}
        if expected is not None:
            args.update(_bytes_arg("expected", expected))
        return await self.call("kv_cas", args)

    async def blob_put(self, data: bytes | str) -> dict[str, Any]:
        return await self.call("blob_put", _bytes_arg("data", data))

    async def blob_get(self, hash: str, offset: int = 0, length: int | None = None) -> bytes:
        got = await self.call("blob_get", {"hash": hash, "offset": offset, "length": length})
        return base64.b64decode(got["data_b64"])

    async def sign(self, data: bytes | str) -> dict[str, str]:
        return await self.call("sign", _bytes_arg("data", data))

    async def schedule_timer(self, name: str, interval_ms: int, repeating: bool = False) -> int:
        """Schedule (or replace) timer ``name``; returns when it first fires. Needs ``timers``."""
        args = {"name": name, "interval_ms": interval_ms, "repeating": repeating}
        return (await self.call("schedule_timer", args))["next_fire_ms"]

    async def cancel_timer(self, name: str) -> bool:
        return (await self.call("cancel_timer", {"name": name}))["cancelled"]

    async def list_timers(self) -> list[dict[str, Any]]:
        return (await self.call("list_timers"))["timers"]
