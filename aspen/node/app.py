"""The node's ASGI app: RPC, blob streaming, watch streams, health, metrics."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import Response as HttpResponse
from starlette.routing import Route

from aspen.cluster.blob_routes import blob_http_routes
from aspen.errors import AspenError
from aspen.federation.routes import federation_routes
from aspen.node.http_guard import HttpGuard
from aspen.node.rpc_route import rpc_route
from aspen.node.watch_routes import watch_routes


def _error(exc: AspenError, status: int) -> HttpResponse:
    return HttpResponse(
        msgspec.json.encode({"type": "Error", "body": exc.to_body()}), status, media_type="application/json"
    )


def build_app(services: Any) -> HttpGuard:
    """The routes, behind the Host/Origin/content-type guard (``http_guard``)."""

    async def healthz(request: HttpRequest) -> HttpResponse:
        draining = services.stopping.is_set()
        body = {"status": "draining" if draining else "ok", "node_id": services.node_id}
        return HttpResponse(msgspec.json.encode(body), 503 if draining else 200, media_type="application/json")

    rpc = rpc_route(services)
    routes = [
        rpc,
        Route("/healthz", healthz, methods=["GET"]),
        *blob_http_routes(services.blobs, services.auth),
        *watch_routes(services, _error),
        *federation_routes(services),  # cluster-to-cluster: signed, no token
    ]
    if services.config.metrics_listen is None:
        routes.append(metrics_route(services))
    return HttpGuard(Starlette(routes=routes), services.config, rpc=rpc.endpoint)


def metrics_route(services: Any) -> Route:
    """``GET /metrics``, open like ``/healthz``: on the node's own address, or
    alone on ``[node] metrics_listen`` (:func:`build_metrics_app`)."""

    async def metrics(request: HttpRequest) -> HttpResponse:
        return HttpResponse(services.metrics.render(), media_type="text/plain; version=0.0.4")

    return Route("/metrics", metrics, methods=["GET"])


def build_metrics_app(services: Any) -> Starlette:
    """The metrics listener's app: ``/metrics`` only, read-only and without
    the Host guard, so a scraper may use any address of the machine."""
    return Starlette(routes=[metrics_route(services)])
