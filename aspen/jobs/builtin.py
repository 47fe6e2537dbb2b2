"""The workers a node runs: the built-in executors plus those that other
distributions add through the ``aspen.workers`` entry-point group."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from typing import Any

from aspen.errors import AspenError, ErrorCode
from aspen.jobs.executors.nix import NixWorker
from aspen.jobs.executors.shell import ShellWorker
from aspen.jobs.worker import WORKERS_ENTRY_POINT_GROUP, Worker

log = logging.getLogger(__name__)


def builtin_workers(options: dict[str, Any], node: Any = None) -> list[Worker]:
    workers: list[Worker] = [
        ShellWorker(
            concurrency=int(options.get("shell_concurrency", 4)),
            sandbox=options.get("shell_sandbox", "auto"),
        ),
        NixWorker(concurrency=int(options.get("nix_concurrency", 1))),
    ]
    try:
        from aspen.jobs.executors.wasm import WasmWorker
    except ImportError as exc:  # the plugin runtime is optional at this layer
        log.info("wasm job executor unavailable: %s", exc)
    else:
        workers.append(WasmWorker(node, concurrency=int(options.get("wasm_concurrency", 2))))
    return workers


def entry_point_workers(node: Any) -> list[Worker]:
    """Each entry point names ``factory(node) -> Worker | list[Worker]``."""
    found: list[Worker] = []
    for ep in sorted(entry_points(group=WORKERS_ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            made = ep.load()(node)
        except Exception as exc:
            raise AspenError(ErrorCode.PLUGIN_LOAD_FAILED, f"job worker entry point {ep.name!r} failed: {exc}") from exc
        for worker in made if isinstance(made, list) else [made]:
            if not isinstance(worker, Worker):
                raise AspenError(ErrorCode.PLUGIN_LOAD_FAILED, f"entry point {ep.name!r} did not return a Worker")
            found.append(worker)
    return found
