"""Running one plugin: a compiled module, a pool of instances on worker
threads, fault classification and the health state.

Extism releases the GIL while the guest runs, so the pool's threads give a
CPU-bound plugin every core; each worker thread owns its instance, so an
instance is never used by two threads.
The wall-clock limit is Extism's ``timeout_ms``, which really interrupts a
looping guest; memory is capped with ``max_pages``. A faulted instance is
dropped and replaced, so the next call starts clean. The workers are
:class:`~aspen.plugins.native_workers.NativeWorkers` (calls run without the
GIL) where ``aspen/handoff/_calls.c`` is built, else (or with
``ASPEN_HANDOFF=python``) :class:`~aspen.plugins.python_workers.PythonWorkers`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import extism

from aspen.errors import AspenError, ErrorCode
from aspen.handoff import NATIVE_CALLS
from aspen.plugins.extism_bridge import HOST_FUNCTIONS
from aspen.plugins.faults import FAULT_CODES, bad_output, decode_json_object
from aspen.plugins.loop_bridge import HostEnv
from aspen.plugins.manifest import EffectiveLimits
from aspen.plugins.state import SERVING, LifecycleState

if NATIVE_CALLS:
    from aspen.plugins.native_workers import NativeWorkers as Workers
else:
    from aspen.plugins.python_workers import PythonWorkers as Workers

log = logging.getLogger("aspen.plugins")

DEGRADED_AFTER = 3  # consecutive faults
QUEUED_PER_INSTANCE = 16  # calls waiting for a free instance before PLUGIN_OVERLOADED


def _native_threads() -> set[int]:
    try:
        tids = {int(tid) for tid in os.listdir("/proc/self/task")}
    except OSError:  # not Linux
        return set()
    return tids - {t.native_id for t in threading.enumerate()}


_extism_threads_batched = False  # set once the first instance exists: Extism's threads are process-wide


def _batch_new_threads(make: Callable[[], Any], *, last: bool = False) -> Any:
    """Run ``make`` and give the native threads it starts the ``SCHED_BATCH``
    policy, until ``last`` (the first instance) has run once. Extism starts
    its helper threads (among them the timer that enforces ``timeout_ms``)
    on the first compile and the first instance in the process. The timer is woken twice per call, and at the normal policy
    it preempts the guest on the worker's vCPU whenever the other vCPU is
    busy (the loop waiting for the result), adding about 15 µs to a 20 µs
    call. ``SCHED_BATCH`` keeps its full share of CPU, so timeouts still
    fire, but it no longer preempts on wake-up. bench_http, Echo with a
    CPU-bound process beside the node: +17–36% in three runs (within noise,
    or a few % slower, on a quiet machine; benchmarks/RESULTS.md)."""
    global _extism_threads_batched
    if _extism_threads_batched:
        return make()
    before = _native_threads()
    made = make()
    for tid in _native_threads() - before:
        try:
            os.sched_setscheduler(tid, os.SCHED_BATCH, os.sched_param(0))
        except (AttributeError, OSError):  # no such policy here, or the thread is gone
            pass
    _extism_threads_batched = last
    return made


def admit(runtime: Any, data: bytes, lifecycle: bool) -> None:
    """What every runtime kind refuses before a call: any call but a
    lifecycle one unless it serves, and input over its limit."""
    if not lifecycle and runtime.state not in SERVING:
        raise AspenError(ErrorCode.UNAVAILABLE, f"plugin '{runtime.name}' is {runtime.state}", plugin=runtime.name)
    limit = runtime.limits.max_input_bytes
    if len(data) > limit:
        raise AspenError(
            ErrorCode.MESSAGE_TOO_LARGE,
            f"input to plugin '{runtime.name}' is {len(data)} bytes, the limit is {limit}",
            size=len(data),
            max=limit,
        )


class PluginRuntime:
    """A plugin's instances and worker threads. Each worker thread owns one
    instance for its whole life (replaced after a fault), so an instance is
    never touched by two threads. Here: admission, the queue quota, the
    deadline, fault counting and the health state; the workers carry the calls."""

    def __init__(self, name: str, wasm: bytes, env: HostEnv, limits: EffectiveLimits) -> None:
        self.name = name
        self.env = env
        self.limits = limits
        self.state = LifecycleState.INITIALIZING
        self.consecutive_faults = 0
        self.calls = 0
        self.faults = 0
        self.last_fault: str | None = None
        manifest = {
            "wasm": [{"data": wasm}],
            "timeout_ms": limits.timeout_ms,
            "memory": {"max_pages": limits.memory_pages},
        }
        self._compiled = _batch_new_threads(lambda: extism.extism.CompiledPlugin(manifest, functions=HOST_FUNCTIONS))
        self._workers = Workers(self)
        self._pending = 0
        self._drained: asyncio.Future[None] | None = None  # made by stop() while calls run
        self._max_pending = limits.concurrency * (1 + QUEUED_PER_INSTANCE)
        self._time_limit = limits.timeout_ms / 1000 + 1.0  # seconds; Extism interrupts the guest first
        first = self.new_instance()
        self._exports = {
            export: bool(first.function_exists(export))
            for export in (
                "plugin_info", "handle_request", "plugin_init", "plugin_health", "plugin_shutdown",
                "plugin_on_timer", "plugin_on_hook_event",  # the callbacks (aspen.plugins.handler.CALLBACKS)
            )
        }  # fmt: skip
        self._spare: queue.SimpleQueue[extism.Plugin] = queue.SimpleQueue()
        self._spare.put(first)  # the first worker adopts it

    def spare_instance(self) -> extism.Plugin | None:
        """The instance made at load, to the first worker that asks (on its thread)."""
        try:
            return self._spare.get_nowait()
        except queue.Empty:
            return None

    def new_instance(self) -> extism.Plugin:
        try:
            return _batch_new_threads(lambda: extism.Plugin(self._compiled), last=True)
        except extism.Error as exc:
            raise AspenError(
                ErrorCode.PLUGIN_LOAD_FAILED, f"plugin '{self.name}' cannot be instantiated: {exc}", plugin=self.name
            ) from exc

    def has_export(self, export: str) -> bool:
        return self._exports.get(export, False)

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def worker_count(self) -> int:
        return len(self._workers)

    # --- on the event loop ----------------------------------------------------

    async def call(
        self,
        export: str,
        data: bytes,
        decode: Callable[[bytes], Any],
        *,
        deadline: float | None = None,
        lifecycle: bool = False,
    ) -> Any:
        """Run ``export`` on a pooled instance; ``decode`` turns the output into
        the result (on the loop with native workers). A fault raises its ``PLUGIN_*`` error
        and counts toward Degraded, a clean call restores Ready. ``lifecycle``
        calls (info, init, shutdown) pass while the plugin is loading or stopping."""
        admit(self, data, lifecycle)
        if self._pending >= self._max_pending:
            raise AspenError(ErrorCode.PLUGIN_OVERLOADED, f"plugin '{self.name}' has too many calls waiting")
        limit = time.monotonic() + self._time_limit
        deadline = limit if deadline is None else min(deadline, limit)
        if self._pending >= len(self._workers) < self.limits.concurrency:  # every worker is busy
            self._workers.add()
        future, ticket = self._workers.submit(export, data, deadline, decode)
        self._pending += 1
        try:
            async with asyncio.timeout(deadline - time.monotonic()):
                result = await future
        except TimeoutError:
            raise AspenError(
                ErrorCode.TIMEOUT, f"plugin '{self.name}' {export} did not finish before its deadline"
            ) from None
        except AspenError as exc:
            if exc.code in FAULT_CODES:
                self._record_fault(exc)
            raise
        finally:
            if future.cancelled():  # the deadline passed, or the caller was cancelled
                self._workers.abandon(ticket)
            self._pending -= 1
            if not self._pending and self._drained is not None and not self._drained.done():
                self._drained.set_result(None)
        self._record_ok()
        return result

    def _record_ok(self) -> None:
        self.calls += 1
        self.consecutive_faults = 0
        if self.state is LifecycleState.DEGRADED:
            log.info("plugin %s is ready again", self.name)
            self.state = LifecycleState.READY

    def _record_fault(self, exc: AspenError) -> None:
        self.calls += 1
        self.faults += 1
        self.consecutive_faults += 1
        self.last_fault = exc.code
        self.env.gate.log.log(
            ("fault", exc.code), logging.WARNING, "plugin %s fault %s: %s", self.name, exc.code, exc.message
        )
        if self.consecutive_faults >= DEGRADED_AFTER and self.state is LifecycleState.READY:
            log.warning("plugin %s is degraded after %d consecutive faults", self.name, self.consecutive_faults)
            self.state = LifecycleState.DEGRADED

    async def probe(self) -> bool:
        """Health probe: ``plugin_health`` when exported (must answer ``{"ok": true}``),
        otherwise ``plugin_info``. Success restores Ready."""
        export = "plugin_health" if self.has_export("plugin_health") else "plugin_info"

        def check(raw: bytes) -> None:
            reply = decode_json_object(self.name, export, raw)
            if export == "plugin_health" and reply.get("ok") is not True:
                raise bad_output(self.name, f"plugin_health reported {reply!r}"[:300])

        try:
            await self.call(export, b"", check)
        except AspenError:
            return False
        return True

    async def stop(self, drain_seconds: float) -> None:
        """Refuse new calls, let running ones finish, call ``plugin_shutdown``."""
        if self.state in (LifecycleState.STOPPING, LifecycleState.STOPPED):
            return
        previous, self.state = self.state, LifecycleState.STOPPING
        if self._pending:
            self._drained = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._drained, drain_seconds)
            except TimeoutError:
                log.warning("plugin %s: %d calls still running at shutdown", self.name, self._pending)
        if previous in SERVING and self.has_export("plugin_shutdown"):
            try:
                await self.call("plugin_shutdown", b"", lambda raw: raw, lifecycle=True)
            except AspenError as exc:
                log.warning("plugin %s: plugin_shutdown failed: %s", self.name, exc.message)
        self.state = LifecycleState.STOPPED
        await self._workers.stop()
