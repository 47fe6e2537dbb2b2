"""The HTTP servers a node can run its ASGI apps on, behind one call.

``[node] http_server``: ``uvicorn`` (httptools when installed, else h11, all
Python), ``granian`` (Rust: hyper and tokio, embedded in the node's loop),
or ``auto`` (the default): ``ASPEN_HTTP_SERVER`` when set, else uvicorn.
The numbers split (benchmarks/RESULTS.md, session 11): on a quiet machine
the node served 1.6× the Echo requests/s on granian, but 0.7× with a
CPU-bound process beside it, and 0.8–0.9× the ReadKey and 0.9× the Ping
either way; so uvicorn stays the default and granian is a choice.

Either way the behaviour is the same: on SIGTERM/SIGINT ``stopping`` is set
first (long streams end), the listener stops accepting, in-flight requests
get at most ``drain_seconds``, then the metrics listener stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from pathlib import Path
from typing import Any

import uvicorn

from aspen.errors import AspenError, ErrorCode
from aspen.node.config import NodeConfig, split_listen

log = logging.getLogger(__name__)

# httptools (C) when it is installed; h11 (pure Python) otherwise. With it Ping and Echo on uvicorn
# serve about twice the requests/s of h11 (benchmarks/RESULTS.md).
try:
    import httptools  # noqa: F401

    HTTP_PROTOCOL = "httptools"
except ImportError:
    HTTP_PROTOCOL = "h11"


def check_listen_free(config: NodeConfig) -> None:
    """Refuse to start on an address another process listens on. granian
    binds with ``SO_REUSEPORT``, so without this a second node on the same
    port would start and silently share the first one's connections."""
    for listen in filter(None, (config.listen, config.metrics_listen)):
        host, port = split_listen(listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers are no obstacle
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise AspenError(
                    ErrorCode.LISTEN_ADDRESS_IN_USE, f"cannot listen on {listen}: {exc.strerror}", listen=listen
                ) from None


def server_kind(config: NodeConfig) -> str:
    """``granian`` or ``uvicorn``: what ``config.http_server`` means.
    ``auto`` is ``ASPEN_HTTP_SERVER`` when set (CI runs the node tests once
    with ``granian``), else uvicorn."""
    if config.http_server != "auto":
        return config.http_server
    forced = os.environ.get("ASPEN_HTTP_SERVER")
    return forced if forced in ("granian", "uvicorn") else "uvicorn"


async def serve_apps(config: NodeConfig, app: Any, metrics_app: Any | None, stopping: asyncio.Event) -> None:
    """Serve ``app`` on ``listen`` (and ``metrics_app`` on ``metrics_listen``) until a stop signal."""
    if server_kind(config) == "granian":
        await _serve_granian(config, app, metrics_app, stopping)
    else:
        await _serve_uvicorn(config, app, metrics_app, stopping)


# --- granian ------------------------------------------------------------------


def _granian(app: Any, listen: str, config: NodeConfig, tls: bool) -> Any:
    from granian.constants import HTTPModes, Interfaces, SSLProtocols
    from granian.log import LogLevels
    from granian.server.embed import Server

    host, port = split_listen(listen)
    return Server(
        app,
        address=host,
        port=port,
        interface=Interfaces.ASGINL,  # the node has no lifespan handlers
        http=HTTPModes.http1,
        websockets=True,
        backlog=1024,
        log_enabled=True,
        log_level=LogLevels.debug if config.log_level == "debug" else LogLevels.error,  # not its "experimental" notice
        ssl_cert=Path(config.tls_cert) if tls and config.tls_cert else None,
        ssl_key=Path(config.tls_key) if tls and config.tls_key else None,
        ssl_protocol_min=SSLProtocols.tls12,
    )


async def _serve_granian(config: NodeConfig, app: Any, metrics_app: Any | None, stopping: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    main = _granian(app, config.listen, config, tls=True)
    extra = None if metrics_app is None else _granian(metrics_app, config.metrics_listen or "", config, tls=False)
    asked = asyncio.Event()

    def on_signal() -> None:
        stopping.set()  # first, so watch streams end while requests drain
        asked.set()

    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, on_signal)
    serving = asyncio.ensure_future(main.serve())
    scraping = None if extra is None else asyncio.ensure_future(extra.serve())
    try:
        waiting = asyncio.ensure_future(asked.wait())
        await asyncio.wait({serving, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        main.stop()  # no new connections; in-flight requests finish
        done, _ = await asyncio.wait({serving}, timeout=config.drain_seconds)
        if not done:
            log.warning("requests still running after drain_seconds=%s; stopping anyway", config.drain_seconds)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        for server, task in ((extra, scraping), (main, serving)):
            if task is not None and not task.done():
                server.stop()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(task), 1.0)
    if serving.done() and not serving.cancelled() and serving.exception() is not None:
        raise serving.exception()


# --- uvicorn ------------------------------------------------------------------


class _UvicornServer(uvicorn.Server):
    """Tells the node it is stopping the moment the signal arrives, so long
    streams (watches) end while uvicorn drains ordinary requests."""

    def __init__(self, config: uvicorn.Config, stopping: asyncio.Event) -> None:
        super().__init__(config)
        self._stopping = stopping

    def handle_exit(self, sig, frame) -> None:
        self._stopping.set()
        super().handle_exit(sig, frame)
        # uvicorn re-raises captured signals when serve() returns, which would
        # kill the process before the stores close; we exit 0 after closing.
        self._captured_signals.clear()


class _UvicornMetricsServer(uvicorn.Server):
    """The ``metrics_listen`` listener: the main server owns the signals and
    stops this one when it has drained."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


async def _serve_uvicorn(config: NodeConfig, app: Any, metrics_app: Any | None, stopping: asyncio.Event) -> None:
    quiet = {"log_level": config.log_level, "access_log": False, "lifespan": "off", "http": HTTP_PROTOCOL}
    server = _UvicornServer(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            proxy_headers=False,  # the peer address is the socket's: X-Forwarded-For must not pick a rate-limit bucket
            timeout_graceful_shutdown=config.drain_seconds,
            ssl_certfile=config.tls_cert,
            ssl_keyfile=config.tls_key,
            **quiet,
        ),
        stopping,
    )
    if metrics_app is None:
        await server.serve()
        return
    host, port = split_listen(config.metrics_listen or "")
    metrics = _UvicornMetricsServer(uvicorn.Config(metrics_app, host=host, port=port, **quiet))
    scraping = asyncio.ensure_future(metrics.serve())
    try:
        await server.serve()
    finally:
        metrics.should_exit = True
        await scraping
