"""What every request handler sees and implements, whatever its tier
(native Python, WASM, IPC).

A handler receives the decoded ``Request`` and a ``RequestContext``. The
context carries who is calling and what they may do, so authentication and
cross-cluster forwarding plug in without touching handlers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import msgspec


@dataclass(frozen=True, slots=True)
class Request:
    type: str
    body: dict[str, Any]
    app: str | None = None  # set for requests that need an app (plugin-provided)


class Response(msgspec.Struct, frozen=True):
    """A handler's answer. A Struct rather than a dataclass: every request
    builds one, and a frozen dataclass's ``__init__`` costs five times more."""

    type: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Per-request facts. ``node`` is the composition root's services object
    (stores, registry, plugin host …); it is typed loosely so lower layers do
    not import the node layer."""

    node: Any = None
    caller: str | None = None  # the verified token's subject; None: the node itself (in-process)
    principal: Any = None  # the verified token (aspen.auth.verifier.Principal), None in-process
    token: str | None = None
    proxy_hops: int = 0
    deadline: float = field(default_factory=lambda: time.monotonic() + 30.0)

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())


@runtime_checkable
class RequestHandler(Protocol):
    """Handlers are tried lowest ``priority`` first: core 0–99, native
    plugins 100–899, WASM plugins 900–999."""

    name: str
    request_types: frozenset[str]
    priority: int

    async def handle(self, request: Request, ctx: RequestContext) -> Response: ...


# Extension contract (native tier). A distribution adds handlers through the
# ``aspen.handlers`` entry-point group; each entry point names a factory
#
#     def factory(node) -> RequestHandler | list[RequestHandler]
#
# called once at node start with the node's services object (attributes
# ``kv``, ``blobs``, ``node_id``, ``data_dir``, ``config``, ``registry``).
# A returned handler may also define ``async start()`` and ``async stop()``,
# which the node awaits after building the table and at shutdown.
# The core handlers register through the same group.
HANDLERS_ENTRY_POINT_GROUP = "aspen.handlers"
