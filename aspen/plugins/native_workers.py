"""Plugin workers whose calls run without the GIL (``aspen/handoff/_calls.c``).

Each worker is a Python thread that owns one instance, as with
:mod:`aspen.plugins.python_workers`, but it spends its life inside
``CallQueue.serve``: the C loop there takes jobs, calls libextism through the
function pointers of the Extism SDK's own library and copies the output,
all without the GIL. It comes back to Python only to replace a faulted
instance. Finished calls are taken by the event loop in batches, woken by
the queue's descriptor (``add_reader``), and decoded there.

A guest's host functions still run Python on the worker's thread (the SDK's
cffi callback takes the GIL), and reach the loop as before
(:mod:`aspen.plugins.loop_bridge`). The :class:`CallContext` a call carries
is kept alive here, by its id, until the call is taken back.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from extism.extism import _ffi, _lib

from aspen.errors import AspenError, ErrorCode
from aspen.handoff import _calls
from aspen.plugins.faults import classify, expired, output_too_large
from aspen.plugins.loop_bridge import CallContext


def _address(cdata: Any) -> int:
    return int(_ffi.cast("uintptr_t", cdata))


_LIBEXTISM = [
    _address(_ffi.addressof(_lib, name))
    for name in (
        "extism_plugin_call_with_host_context", "extism_plugin_output_length",
        "extism_plugin_output_data", "extism_plugin_error",
    )
]  # fmt: skip


def _no_wakeup_preemption() -> None:
    """``SCHED_BATCH`` for the calling worker thread: woken for a job, it no
    longer preempts the thread running on its vCPU (often the event loop,
    which just queued the job). Beside a CPU-bound process that earned +5–12%
    over HTTP (Echo 9 670 vs 8 620 req/s) and cost ~7% on a quiet machine
    (benchmarks/RESULTS.md, "session 12"); the thread keeps its full share."""
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):  # no such policy here
        pass


class NativeWorkers:
    """The worker threads of one :class:`~aspen.plugins.runtime.PluginRuntime`."""

    def __init__(self, runtime: Any) -> None:
        self._runtime = runtime
        self._queue = _calls.CallQueue(*_LIBEXTISM, runtime.limits.max_output_bytes)
        self._ids = itertools.count(1)
        # id -> (future, export, decode, the cffi handle of its CallContext)
        self._waiting: dict[int, tuple[asyncio.Future, str, Callable[[bytes], Any], Any]] = {}
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None  # the one that reads the queue
        self._load_error: AspenError | None = None  # why the last instance could not be made

    def __len__(self) -> int:
        return len(self._threads)

    def add(self) -> None:
        """Start one more worker thread."""
        worker = threading.Thread(target=self._serve, name=f"plugin-{self._runtime.name}", daemon=True)
        worker.start()
        self._threads.append(worker)

    def submit(
        self, export: str, data: bytes, deadline: float, decode: Callable[[bytes], Any]
    ) -> tuple[asyncio.Future, int]:
        """Queue a call: its future, and the ticket :meth:`abandon` takes."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._queue.fileno())
            loop.add_reader(self._queue.fileno(), self._take)
            self._loop = loop
        future = loop.create_future()
        handle = _ffi.new_handle(CallContext(self._runtime.env, deadline))
        call_id = next(self._ids)
        self._waiting[call_id] = (future, export, decode, handle)
        timeout_ns = max(0, int((deadline - time.monotonic()) * 1e9))
        try:
            self._queue.submit(call_id, export.encode(), data, _address(handle), timeout_ns)
        except MemoryError:
            del self._waiting[call_id]
            raise
        return future, call_id

    def abandon(self, call_id: int) -> None:
        """The caller gave up: if the call still waits, it never runs."""
        self._queue.cancel(call_id)

    async def stop(self) -> None:
        for _ in self._threads:
            self._queue.stop_one()
        for worker in self._threads:
            await asyncio.to_thread(worker.join)
        self._threads.clear()
        if self._loop is not None and not self._loop.is_closed():
            self._take()  # what finished while the workers stopped
            self._loop.remove_reader(self._queue.fileno())
        self._loop = None

    # --- on the event loop ----------------------------------------------------

    def _take(self) -> None:
        for call_id, status, payload in self._queue.take():
            future, export, decode, _handle = self._waiting.pop(call_id)
            if future.done():  # the caller gave up
                continue
            try:
                future.set_result(self._result(export, decode, status, payload))
            except AspenError as exc:
                future.set_exception(exc)
            except Exception as exc:  # a host bug: report it, keep serving
                runtime = self._runtime
                runtime.env.gate.log.log("worker-error", logging.ERROR, "plugin %s: decoding failed", runtime.name,
                                         exc_info=True)  # fmt: skip
                future.set_exception(AspenError(ErrorCode.INTERNAL, f"plugin '{runtime.name}': internal error: {exc}"))

    def _result(self, export: str, decode: Callable[[bytes], Any], status: int, payload: Any) -> Any:
        name = self._runtime.name
        if status == _calls.DONE_OK:
            return decode(payload)
        if status == _calls.DONE_FAULT:
            raise classify(name, export, payload)
        if status == _calls.DONE_EXPIRED:
            raise expired(name)
        if status == _calls.DONE_TOO_LARGE:
            raise output_too_large(name, export, payload, self._runtime.limits.max_output_bytes)
        if status == _calls.DONE_NO_INSTANCE and self._load_error is not None:
            raise self._load_error
        raise AspenError(ErrorCode.INTERNAL, f"plugin '{name}': the host ran out of memory for {export}")

    # --- on a worker thread ---------------------------------------------------

    def _serve(self) -> None:
        runtime = self._runtime
        _no_wakeup_preemption()
        instance = runtime.spare_instance()
        try:
            while True:
                if instance is None:
                    self._queue.wait()  # made when there is work for it, as a Python worker does
                    try:
                        instance = runtime.new_instance()
                    except AspenError as exc:
                        self._load_error = exc  # the next job is answered with it
                if not self._queue.serve(0 if instance is None else _address(instance.plugin)):
                    return
                instance = None  # it faulted: never reused
        except Exception:  # a host bug: the other workers and the deadline still answer
            runtime.env.gate.log.log("worker-error", logging.ERROR, "plugin %s: worker failed", runtime.name,
                                     exc_info=True)  # fmt: skip
