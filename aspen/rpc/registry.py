"""The handler table and request dispatch.

The table is an immutable :class:`RegistrySnapshot` replaced whole on every
change (add, remove, hot reload), so a request in flight keeps the snapshot
it started with and readers never lock. Dispatch tries the local handlers
lowest priority number first, then an optional ``forwarder`` (federation),
then answers ``NO_HANDLER`` (core requests), ``CAPABILITY_UNAVAILABLE``
(requests that need an app) or ``UNKNOWN_REQUEST`` (names nobody declared).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from aspen.errors import AspenError, ErrorCode
from aspen.rpc.app_requests import APP_REQUESTS
from aspen.rpc.catalog import CORE_REQUEST_TYPES
from aspen.rpc.handler import Request, RequestContext, RequestHandler, Response

log = logging.getLogger(__name__)

# ``forwarder(request, ctx)``: a Response from another cluster, or None.
Forwarder = Callable[[Request, RequestContext], Awaitable[Response | None]]


CORE_DISTRIBUTION = "aspen-cluster"
NATIVE_PLUGIN_PRIORITIES = (100, 899)  # handlers from other distributions
CORE_PRIORITY_END = 100  # core handlers use 0-99


def error_response(exc: AspenError) -> Response:
    return Response("Error", exc.to_body())


def keeps_own_deadline(handler: RequestHandler) -> bool:
    """Core handlers (local store calls: the timer would cost more than the
    work) and handlers that say ``keeps_deadline = True`` (they answer
    ``TIMEOUT`` themselves, like the WASM runtime) run without the
    registry's timer."""
    return handler.priority < CORE_PRIORITY_END or getattr(handler, "keeps_deadline", False)


@dataclass(frozen=True, slots=True)
class RegistrySnapshot:
    handlers: tuple[RequestHandler, ...]  # sorted by priority, stable
    by_type: Mapping[str, tuple[RequestHandler, ...]]
    app_types: Mapping[str, str]  # request type -> app, for CAPABILITY_UNAVAILABLE
    untimed: Mapping[str, RequestHandler]  # request type -> its handler, which keeps its own deadline

    def handler_for(self, request_type: str) -> RequestHandler | None:
        found = self.by_type.get(request_type)
        return found[0] if found else None

    @property
    def request_types(self) -> frozenset[str]:
        return frozenset(self.by_type)


def _build(handlers: Iterable[RequestHandler], app_types: Mapping[str, str]) -> RegistrySnapshot:
    ordered = tuple(sorted(handlers, key=lambda h: h.priority))
    names = [h.name for h in ordered]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"duplicate handler names: {sorted(dupes)}")
    by_type: dict[str, list[RequestHandler]] = {}
    apps = dict(app_types)
    for h in ordered:
        app = getattr(h, "app_id", None)
        for t in h.request_types:
            by_type.setdefault(t, []).append(h)
            if app and t not in CORE_REQUEST_TYPES:
                apps[t] = app
    return RegistrySnapshot(
        ordered,
        MappingProxyType({t: tuple(hs) for t, hs in by_type.items()}),
        MappingProxyType(apps),
        MappingProxyType({t: hs[0] for t, hs in by_type.items() if keeps_own_deadline(hs[0])}),
    )


class HandlerRegistry:
    def __init__(
        self,
        handlers: Iterable[RequestHandler] = (),
        *,
        forwarder: Forwarder | None = None,
        max_proxy_hops: int = 3,
    ) -> None:
        self._snap = _build(handlers, APP_REQUESTS)
        self.forwarder = forwarder
        self.max_proxy_hops = max_proxy_hops
        self._listeners: list[Callable[[RegistrySnapshot], None]] = []

    # --- the table ----------------------------------------------------------

    def snapshot(self) -> RegistrySnapshot:
        return self._snap

    def replace(self, handlers: Iterable[RequestHandler]) -> RegistrySnapshot:
        """Swap in a new table. Apps seen before stay known (their types
        answer CAPABILITY_UNAVAILABLE rather than UNKNOWN_REQUEST)."""
        self._snap = _build(handlers, self._snap.app_types)
        for listener in self._listeners:
            listener(self._snap)
        return self._snap

    def add_listener(self, listener: Callable[[RegistrySnapshot], None]) -> None:
        """Call ``listener(snapshot)`` after every table swap (the app registry
        follows which apps this node serves); it must not block."""
        self._listeners.append(listener)

    def add(self, *handlers: RequestHandler) -> RegistrySnapshot:
        return self.replace((*self._snap.handlers, *handlers))

    def remove(self, *names: str) -> RegistrySnapshot:
        gone = set(names)
        return self.replace(h for h in self._snap.handlers if h.name not in gone)

    def declare_app(self, app: str, request_types: Iterable[str]) -> None:
        """Record which app provides some request types even while no handler
        for them is loaded (e.g. an installed but disabled plugin)."""
        snap = self._snap
        apps = {**snap.app_types, **{t: app for t in request_types}}
        self._snap = RegistrySnapshot(snap.handlers, snap.by_type, MappingProxyType(apps), snap.untimed)

    # --- dispatch -----------------------------------------------------------

    async def dispatch(self, request: Request, ctx: RequestContext) -> Response:
        """Never raises: every failure becomes an ``Error`` response.

        Everything runs under the request's deadline: the registry's timer,
        or the handler's own (:func:`keeps_own_deadline`)."""
        snap = self._snap  # this request keeps this table, whatever swaps meanwhile
        try:
            untimed = snap.untimed.get(request.type)
            if untimed is not None:
                return await untimed.handle(request, ctx)
            async with asyncio.timeout(ctx.remaining()):
                return await self._dispatch(snap, request, ctx)
        except AspenError as exc:
            return error_response(exc)
        except TimeoutError:
            return error_response(AspenError(ErrorCode.TIMEOUT, f"{request.type} did not finish before its deadline"))
        except Exception:
            log.exception("handler failed on %s", request.type)
            return error_response(AspenError(ErrorCode.INTERNAL, f"internal error while handling {request.type}"))

    async def _dispatch(self, snap: RegistrySnapshot, request: Request, ctx: RequestContext) -> Response:
        by_type = snap.by_type.get(request.type)
        if by_type:
            return await by_type[0].handle(request, ctx)
        core = request.type in CORE_REQUEST_TYPES and request.app is None
        if not core and self.forwarder is not None and ctx.proxy_hops < self.max_proxy_hops:
            forwarded = await self.forwarder(request, ctx)
            if forwarded is not None:
                return forwarded
        if core:
            raise AspenError(ErrorCode.NO_HANDLER, f"no handler found for request type {request.type}")
        app = request.app or snap.app_types.get(request.type)
        if app is None:
            raise AspenError(ErrorCode.UNKNOWN_REQUEST, f"unknown request type {request.type!r}")
        raise AspenError(
            ErrorCode.CAPABILITY_UNAVAILABLE,
            f"the '{app}' app is not loaded on this cluster",
            required_app=app,
            hints=[],
        )

    # --- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        """Await ``start()`` of every handler that has one, in priority order."""
        for h in self._snap.handlers:
            start = getattr(h, "start", None)
            if start is not None:
                await start()

    async def stop(self) -> None:
        """Await ``stop()`` in reverse order; one failure does not skip the rest."""
        for h in reversed(self._snap.handlers):
            stop = getattr(h, "stop", None)
            if stop is None:
                continue
            try:
                await stop()
            except Exception:
                log.exception("handler %s failed to stop", h.name)


def load_entry_point_handlers(node: Any, group: str) -> list[RequestHandler]:
    """Call every factory in the entry-point ``group`` with the node's services;
    a factory may return one handler, a list, or None (preconditions not met)."""
    from importlib.metadata import entry_points

    handlers: list[RequestHandler] = []
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        try:
            made = ep.load()(node)
        except AspenError:
            raise  # the factory's own verdict (e.g. a store it needs is unreachable)
        except Exception as exc:
            raise AspenError(ErrorCode.PLUGIN_LOAD_FAILED, f"handler entry point {ep.name!r} failed: {exc}") from exc
        if made is None:
            continue
        core = ep.dist is not None and ep.dist.name == CORE_DISTRIBUTION
        for h in made if isinstance(made, (list, tuple)) else [made]:
            if not isinstance(h, RequestHandler):
                raise AspenError(
                    ErrorCode.INVALID_ARGUMENT, f"entry point {ep.name!r} returned {h!r}, not a RequestHandler"
                )
            low, high = (0, 899) if core else NATIVE_PLUGIN_PRIORITIES
            if not low <= h.priority <= high:
                raise AspenError(
                    ErrorCode.PLUGIN_PRIORITY_OUT_OF_RANGE,
                    f"handler {h.name!r} from entry point {ep.name!r} has priority {h.priority}; "
                    f"native handlers use {low}-{high}",
                    priority=h.priority,
                    allowed=[low, high],
                )
            handlers.append(h)
    return handlers
