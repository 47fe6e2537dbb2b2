"""What a browser may not do to a node: an ASGI middleware in front of every route.

A web page can make a browser send requests to a node on 127.0.0.1, so:

- ``Host`` must name the node (its listen and advertise_url hosts,
  ``localhost``, ``127.0.0.1``, ``::1``, ``[node] allowed_hosts``; any port).
  A DNS-rebinding page reaches the node under the attacker's name.
- ``Origin``, sent by browsers and never by Aspen's clients, must be listed
  in ``[node] allowed_origins`` (empty by default: every page is refused).
  This covers the WebSocket handshake too, which browsers do not guard.
- ``POST /v1/rpc`` must be JSON or msgpack: a form or ``text/plain`` body is
  what a page can send without a CORS preflight.

A missing ``Host`` is not a browser and passes. Refusals carry the usual
error envelope; one pass over the headers, so the RPC hot path stays cheap.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import msgspec

from aspen.errors import AspenError, ErrorCode
from aspen.node.config import NodeConfig
from aspen.rpc.envelope import JSON, MSGPACK

_RPC_MEDIA = frozenset({JSON.encode(), MSGPACK.encode()})
_WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::"})
_ANY = "*"


def host_name(value: str) -> str:
    """``Host``-header form → the bare lower-case name: no port, no brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    name, sep, port = value.rpartition(":")
    return name if sep and port.isdigit() and ":" not in name else value


def allowed_host_names(config: NodeConfig) -> frozenset[str]:
    """Every name this node answers to; a wildcard listen address adds none."""
    names = {"localhost", "127.0.0.1", "::1", host_name(config.host), urlsplit(config.advertise_url).hostname or ""}
    names.update(host_name(h) for h in config.allowed_hosts)
    return frozenset(names - _WILDCARD_ADDRESSES)


def _origins(values: Iterable[str]) -> frozenset[bytes]:
    return frozenset(v.strip().lower().rstrip("/").encode() for v in values)


class HttpGuard:
    """Refuses a foreign Host or Origin (403) and a non-RPC content type (415).

    ``rpc``: the ``POST /v1/rpc`` endpoint, called straight from here rather
    than through Starlette's error and exception middleware and router — the
    endpoint answers every failure with an envelope itself, and that path is
    the one users measure (bench_http)."""

    def __init__(self, app: Any, config: NodeConfig, rpc: Any | None = None) -> None:
        self.app = app
        self.rpc = rpc
        hosts = allowed_host_names(config)
        self.any_host = _ANY in hosts
        self.hosts = hosts
        self.hosts_seen: set[bytes] = set()  # raw Host values already accepted
        self.origins = _origins(config.allowed_origins)

    def _host_ok(self, raw: bytes) -> bool:
        if raw in self.hosts_seen:
            return True
        ok = self.any_host or host_name(raw.decode("latin-1")) in self.hosts
        if ok and len(self.hosts_seen) < 64:
            self.hosts_seen.add(raw)
        return ok

    def _refusal(self, scope: dict) -> tuple[int, AspenError] | None:
        host = origin = media = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
            elif name == b"origin":
                origin = value
            elif name == b"content-type":
                media = value
        if host is not None and not self._host_ok(host):
            shown = host.decode("latin-1")
            return 403, AspenError(ErrorCode.HOST_NOT_ALLOWED, f"Host {shown!r} is not a name of this node", host=shown)
        if origin is not None and origin.lower().rstrip(b"/") not in self.origins:
            shown = origin.decode("latin-1")
            return 403, AspenError(
                ErrorCode.ORIGIN_NOT_ALLOWED, f"Origin {shown!r} is not in [node] allowed_origins", origin=shown
            )
        if (
            scope["path"] == "/v1/rpc"
            and scope.get("method") == "POST"
            and (media is None or media.partition(b";")[0].strip().lower() not in _RPC_MEDIA)
        ):
            shown = "none" if media is None else media.decode("latin-1")
            return 415, AspenError(
                ErrorCode.UNSUPPORTED_MEDIA_TYPE, f"/v1/rpc takes Content-Type {JSON} or {MSGPACK}, got {shown!r}"
            )
        return None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            refused = self._refusal(scope)
            if refused is not None:
                await _refuse(scope, send, *refused)
                return
            if self.rpc is not None and scope["path"] == "/v1/rpc" and scope.get("method") == "POST":
                await self.rpc(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _refuse(scope: dict, send: Any, status: int, exc: AspenError) -> None:
    body = msgspec.json.encode({"type": "Error", "body": exc.to_body()})
    headers = [(b"content-type", JSON.encode()), (b"content-length", b"%d" % len(body))]
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    else:  # the handshake answered with the envelope (ASGI's websocket.http.response, which uvicorn has)
        await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
