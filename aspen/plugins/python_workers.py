"""Plugin workers in Python: the plain path, for where
``aspen/handoff/_calls.c`` is not built or ``ASPEN_HANDOFF=python`` asks for
it. Same behaviour as :mod:`aspen.plugins.native_workers`, slower: a worker
needs the GIL to take a job and to hand the result back.

Each worker thread owns one instance for its whole life (replaced after a
fault), so an instance is never touched by two threads; jobs reach the
workers through one queue, results come back with ``call_soon_threadsafe``
(:mod:`aspen.handoff`).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import extism

from aspen.errors import AspenError, ErrorCode
from aspen.handoff import PARK_NS, EventCount
from aspen.plugins.faults import INSTANCE_FAULTS, classify, expired, output_too_large
from aspen.plugins.loop_bridge import CallContext


class _Job:
    """One call crossing to a worker, which settles ``future`` on ``loop``."""

    __slots__ = ("data", "deadline", "decode", "export", "future", "loop")

    def __init__(self, loop, export, data, deadline, decode) -> None:
        self.loop = loop
        self.future: asyncio.Future = loop.create_future()
        self.export = export
        self.data = data
        self.deadline = deadline
        self.decode = decode


def _settle(future: asyncio.Future, ok: bool, value: Any) -> None:
    if not future.done():  # the caller gave up (cancelled)
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class PythonWorkers:
    """The worker threads of one :class:`~aspen.plugins.runtime.PluginRuntime`."""

    def __init__(self, runtime: Any) -> None:
        self._runtime = runtime
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._submitted = EventCount()  # bumped after every put on _jobs
        self._threads: list[threading.Thread] = []

    def __len__(self) -> int:
        return len(self._threads)

    def add(self) -> None:
        """Start one more worker thread."""
        worker = threading.Thread(target=self._work, name=f"plugin-{self._runtime.name}", daemon=True)
        worker.start()
        self._threads.append(worker)

    def submit(
        self, export: str, data: bytes, deadline: float, decode: Callable[[bytes], Any]
    ) -> tuple[asyncio.Future, None]:
        """Queue a call: its future, and the ticket :meth:`abandon` takes."""
        job = _Job(asyncio.get_running_loop(), export, data, deadline, decode)
        self._jobs.put(job)
        self._submitted.bump()
        return job.future, None

    def abandon(self, _ticket: None) -> None:
        """Nothing to do: a worker skips a job whose future is done."""

    async def stop(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)
            self._submitted.bump()
        for worker in self._threads:
            await asyncio.to_thread(worker.join)
        self._threads.clear()

    # --- on a worker thread ---------------------------------------------------

    def _work(self) -> None:
        runtime = self._runtime
        instance: extism.Plugin | None = runtime.spare_instance()
        jobs, submitted = self._jobs, self._submitted
        while True:
            seen = submitted.value()  # read before looking, so no put goes unnoticed
            if jobs.empty():
                submitted.wait(seen, PARK_NS)
                continue
            try:
                job = jobs.get_nowait()
            except queue.Empty:  # another worker took it
                continue
            if job is None:
                return
            if job.future.done():  # the caller gave up; a racy read off the loop (GIL-atomic), _settle checks again
                continue
            try:
                if instance is None:
                    instance = runtime.new_instance()
                ok, value = True, self._run(instance, job)
            except AspenError as exc:
                ok, value = False, exc
                if exc.code in INSTANCE_FAULTS:
                    instance = None  # a faulted instance is never reused
            except Exception as exc:  # a host bug: report it, keep the worker alive
                runtime.env.gate.log.log(
                    "worker-error", logging.ERROR, "plugin %s: worker failed", runtime.name, exc_info=True
                )
                ok, value = False, AspenError(ErrorCode.INTERNAL, f"plugin '{runtime.name}': internal error: {exc}")
            try:
                job.loop.call_soon_threadsafe(_settle, job.future, ok, value)
            except RuntimeError:  # the loop is gone; nobody is waiting
                pass

    def _run(self, instance: extism.Plugin, job: _Job) -> Any:
        runtime = self._runtime
        if time.monotonic() >= job.deadline:
            raise expired(runtime.name)
        try:
            buf = instance.call(job.export, job.data, parse=None, host_context=CallContext(runtime.env, job.deadline))
        except extism.Error as exc:
            raise classify(runtime.name, job.export, str(exc)) from None
        limit = runtime.limits.max_output_bytes
        if len(buf) > limit:
            raise output_too_large(runtime.name, job.export, len(buf), limit)
        return job.decode(bytes(buf))
