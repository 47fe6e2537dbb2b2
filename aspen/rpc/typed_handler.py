"""Base of the core handlers: each request type maps to a method that takes
the decoded body Struct and returns the response Struct."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from aspen.rpc.catalog import CORE_REQUESTS, parse_body, to_body
from aspen.rpc.handler import Request, RequestContext, Response


def method_name(request_type: str) -> str:
    """``CompareAndSwapKey`` -> ``compare_and_swap_key``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", request_type).lower()


class TypedHandler:
    """Subclasses set ``name``, ``priority`` and ``handles`` (request types
    of ``catalog``, the core one by default) and define one ``async`` method
    per type, named in snake case."""

    name: ClassVar[str]
    priority: ClassVar[int]
    handles: ClassVar[tuple[str, ...]]
    catalog: ClassVar[dict[str, tuple[type, str, type]]] = CORE_REQUESTS  # type -> (body, response type, response)

    def __init__(self, node: Any) -> None:
        self.node = node
        self._routes = {
            t: (self.catalog[t][0], self.catalog[t][1], getattr(self, method_name(t))) for t in self.handles
        }
        self.request_types = frozenset(self._routes)

    async def handle(self, request: Request, ctx: RequestContext) -> Response:
        body_cls, response_type, method = self._routes[request.type]
        result = await method(parse_body(request.body, body_cls), ctx)
        return Response(response_type, to_body(result))
