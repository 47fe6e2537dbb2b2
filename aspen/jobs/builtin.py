"""The workers a node runs: the built-in executors plus those that other
distributions add through the ``aspen.workers`` entry-point group; and the
``[jobs]`` options that configure them and the pool.

Sandbox: ``shell_sandbox = "required"`` (default) or ``"none"``,
``sandbox_uid = 65534``, ``sandbox_gid`` (= uid), ``nix_network = false``.
VM jobs: the ``[jobs.vm]`` table (:class:`aspen.jobs.executors.vm.VmConfig`).
Limits: see :mod:`aspen.jobs.limits`. Pool: ``max_output_mb = 16`` (per job
log), ``retention_days = 7`` (finished jobs, then collected).
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from typing import Any

from aspen.errors import AspenError, ErrorCode
from aspen.jobs.cgroup import Cgroups
from aspen.jobs.executors.nix import NixWorker
from aspen.jobs.executors.shell import ShellWorker
from aspen.jobs.executors.vm import VmConfig, VmWorker
from aspen.jobs.limits import LimitPolicy, MiB
from aspen.jobs.sandbox import DEFAULT_UID, Sandbox
from aspen.jobs.worker import WORKERS_ENTRY_POINT_GROUP, Worker

log = logging.getLogger(__name__)


def job_sandbox(options: dict[str, Any], **kw: Any) -> Sandbox:
    """The sandbox ``[jobs]`` describes (shell jobs, nix jobs, process plugins)."""
    uid = int(options.get("sandbox_uid", DEFAULT_UID))
    return Sandbox(options.get("shell_sandbox", "required"), uid=uid, gid=int(options.get("sandbox_gid", uid)), **kw)


def builtin_workers(options: dict[str, Any], node: Any = None) -> list[Worker]:
    policy = LimitPolicy.from_options(options)
    shell_sandbox = job_sandbox(options)
    cgroups = Cgroups.open()
    workers: list[Worker] = [
        ShellWorker(
            concurrency=int(options.get("shell_concurrency", 4)), sandbox=shell_sandbox, policy=policy, cgroups=cgroups
        ),
        NixWorker(
            concurrency=int(options.get("nix_concurrency", 1)),
            sandbox=job_sandbox(options, network=bool(options.get("nix_network", False))),
            policy=policy,
            cgroups=cgroups,
        ),
    ]
    vm = VmConfig.from_options(options.get("vm"))
    if vm.enabled:
        workers.append(VmWorker(vm, sandbox=shell_sandbox, policy=policy, cgroups=cgroups))
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


def pool_options(options: dict[str, Any]) -> dict[str, Any]:
    """The ``WorkerPool`` keyword arguments that ``[jobs]`` sets."""
    output_mb, days = options.get("max_output_mb", 16), options.get("retention_days", 7)
    if not (isinstance(output_mb, int | float) and output_mb > 0 and isinstance(days, int | float) and days > 0):
        raise AspenError(ErrorCode.INVALID_ARGUMENT, "[jobs] max_output_mb and retention_days must be positive numbers")
    return {"output_limit": int(output_mb * MiB), "retention_seconds": float(days) * 86400}
