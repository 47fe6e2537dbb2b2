"""Starting, watching, restarting and stopping one plugin process.

The process runs in the job sandbox (:class:`~aspen.jobs.sandbox.Sandbox`:
unprivileged uid, rlimits, bubblewrap, no network) in its own process group;
with ``allowed_hosts`` an :class:`~aspen.plugins.process.egress.EgressProxy`
lives as long as the supervisor and the process starts behind the in-sandbox
forwarder, with the proxy variables in its environment. A run is: spawn, handshake
(``plugin_info`` must name the manifest's plugin and handles, then ``init``
must answer ``{"ok": true}``), serve until something goes wrong — the process
exits, the :class:`~aspen.plugins.process.connection.Peer` reports a flood
or an ignored deadline, a health probe fails — then kill the group and start
again after an exponential backoff. ``max_failures`` failures within
``window`` seconds end in ``FAILED``, keeping the last stderr lines; a
handshake that contradicts the manifest fails at once (a restart cannot fix
it). Calls made while the process restarts wait for it until their deadline.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import time
from contextlib import suppress
from enum import StrEnum
from typing import Any

import msgspec

from aspen.errors import AspenError, ErrorCode
from aspen.jobs.limits import JobLimits
from aspen.jobs.sandbox import SANDBOX_WORKDIR, Sandbox, job_env
from aspen.plugins.process.connection import PeerLimits, Serve
from aspen.plugins.process.egress import EgressLimits, EgressProxy
from aspen.plugins.process.process_tree import descendants, running, signal_group
from aspen.plugins.process.protocol import EMPTY, raw
from aspen.plugins.process.run import ProcessRun, StderrTail

log = logging.getLogger("aspen.plugins.process")
_decode = msgspec.json.Decoder().decode
DRAIN_SECONDS = 1.0  # a grandchild that escaped may hold the pipes open: stop reading then


class ProcessSpec(msgspec.Struct, frozen=True):
    """What the manifest says about the process. ``directory``: the unpacked
    bundle, the process's working directory (read-only in the sandbox, which
    must bind it); ``cwd`` is relative to it."""

    name: str
    handles: tuple[str, ...]
    command: tuple[str, ...]
    directory: str
    cwd: str = "."
    env: dict[str, str] = {}
    allowed_hosts: tuple[str, ...] = ()  # host[:port] patterns (aspen.plugins.process.egress_hosts)


class _Reply(msgspec.Struct):
    type: str
    body: dict[str, Any]


_decode_reply = msgspec.json.Decoder(_Reply).decode


class RestartPolicy(msgspec.Struct, frozen=True):
    max_failures: int = 5  # within window: FAILED
    window: float = 60.0
    backoff_base: float = 0.1  # doubles with each failure in the window
    backoff_max: float = 30.0
    startup_timeout: float = 10.0  # each of plugin_info and init
    health_interval: float = 10.0  # 0: no probes
    health_timeout: float = 2.0
    stop_grace: float = 2.0  # for the shutdown answer, then after SIGTERM
    stderr_lines: int = 50


class State(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    FAILED = "failed"
    STOPPED = "stopped"


class _Permanent(Exception):
    def __init__(self, error: AspenError) -> None:
        self.error = error


class ProcessSupervisor:
    """``serve``: the plugin's calls into the node (a
    :class:`~aspen.plugins.process.host_calls.GatedHostCalls`)."""

    def __init__(
        self,
        spec: ProcessSpec,
        serve: Serve,
        *,
        sandbox: Sandbox,
        limits: JobLimits | None = None,
        policy: RestartPolicy | None = None,
        peer_limits: PeerLimits | None = None,
        egress: EgressLimits | None = None,
    ) -> None:
        self.spec = spec
        self.serve = serve
        self.sandbox = sandbox
        self.limits = limits or JobLimits()
        self.policy = policy or RestartPolicy()
        self.peer_limits = peer_limits or PeerLimits()
        self.stderr = StderrTail(spec.name, self.policy.stderr_lines)
        self.state = State.STOPPED
        self.restarts = 0
        self.last_error: str | None = None
        self.failure: AspenError | None = None
        self._failures: collections.deque[float] = collections.deque()
        self._ready = asyncio.Event()  # set while RUNNING, and once FAILED or STOPPED
        self._run: ProcessRun | None = None
        self._task: asyncio.Task[None] | None = None
        active = spec.allowed_hosts and sandbox.active  # without the sandbox there is no namespace to guard
        self.egress = EgressProxy(spec.name, spec.allowed_hosts, egress) if active else None

    # --- the public surface --------------------------------------------------------

    async def start(self) -> None:
        """Start supervising; returns once the first handshake succeeded, or
        raises what failed the plugin."""
        self.failure, self.state = None, State.STARTING
        self._failures.clear()  # a reload after FAILED starts with a clean slate
        self._ready.clear()
        self._task = asyncio.ensure_future(self._supervise())
        await self._ready.wait()
        if self.state is not State.RUNNING:
            raise self._unavailable()

    async def call(self, method: str, params: msgspec.Raw = EMPTY, timeout: float = 30.0) -> msgspec.Raw:
        deadline = time.monotonic() + timeout
        if self.state in (State.FAILED, State.STOPPED):
            raise self._unavailable()
        if self.state is not State.RUNNING:
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                raise AspenError(ErrorCode.PLUGIN_TIMEOUT, f"plugin '{self.spec.name}' is restarting") from None
        run = self._run
        if self.state is not State.RUNNING or run is None:
            raise self._unavailable()
        return await run.peer.call(method, params, max(0.0, deadline - time.monotonic()))

    async def request(
        self, type: str, body: dict[str, Any], *, caller: str | None = None, app: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:  # fmt: skip
        """``handle_request``: the plugin's reply ``{"type", "body"}``."""
        params = {"type": type, "body": body, "app": app, "caller": caller, "deadline_ms": int(timeout * 1000)}
        answer = await self.call("handle_request", raw(params), timeout)
        try:
            out = _decode_reply(answer)
        except msgspec.DecodeError:
            out = None
        if out is None or not out.type:
            raise AspenError(ErrorCode.PLUGIN_BAD_OUTPUT, f"plugin '{self.spec.name}': a reply is {{type, body}}")
        return {"type": out.type, "body": out.body}

    def info(self) -> dict[str, Any]:
        """For ``aspen plugin info``."""
        return {
            "state": self.state.value,
            "pid": self._run.pid if self._run and self.state is State.RUNNING else None,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "stderr": list(self.stderr.lines),
        }

    async def stop(self) -> None:
        """``shutdown``, then end of input, SIGTERM, SIGKILL, each after the grace."""
        run, was_running = self._run, self.state is State.RUNNING
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        if run is not None:
            tree = await asyncio.to_thread(descendants, run.pid) if not run.exited.done() else []
            if was_running:
                await self._graceful(run)
            await self._reap(run, tree)
        self._run = None
        if self.egress is not None:
            await self.egress.stop()
        self.state = State.STOPPED
        self._ready.set()

    # --- supervision ----------------------------------------------------------------

    def _unavailable(self) -> AspenError:
        if self.failure is not None:
            return self.failure
        return AspenError(ErrorCode.UNAVAILABLE, f"plugin '{self.spec.name}' is stopped")

    async def _supervise(self) -> None:
        try:
            await self._restarting()
        except Exception:  # a bug here must still end in FAILED, never leave callers waiting
            log.exception("plugin %s: supervision failed", self.spec.name)
            self._fail(AspenError(ErrorCode.INTERNAL, f"plugin '{self.spec.name}': supervision failed"))

    async def _restarting(self) -> None:
        while True:
            self.state = State.STARTING
            run = self._run = ProcessRun(self.spec.name, self.serve, self.peer_limits, self.stderr)
            try:
                await self._spawn(run)
                await self._handshake(run)
            except _Permanent as exc:
                await self._reap(run)
                self._fail(exc.error)
                return
            except AspenError as exc:
                reason = exc.message
            else:
                self.state = State.RUNNING
                self._ready.set()
                health = asyncio.ensure_future(self._probe(run)) if self.policy.health_interval > 0 else None
                try:
                    reason = await run.fault
                finally:
                    if health is not None:
                        health.cancel()
            self._ready.clear()
            self.state = State.BACKOFF  # new calls wait for the next process
            await self._reap(run)
            self.last_error, self.restarts = reason, self.restarts + 1
            log.warning("plugin %s: %s; restarting", self.spec.name, reason)
            now = time.monotonic()
            self._failures.append(now)
            while self._failures and self._failures[0] < now - self.policy.window:
                self._failures.popleft()
            if len(self._failures) >= self.policy.max_failures:
                self._fail(AspenError(
                    ErrorCode.PLUGIN_FAILED,
                    f"plugin '{self.spec.name}' failed {len(self._failures)} times in {self.policy.window:g}s: {reason}",
                    plugin=self.spec.name, stderr=list(self.stderr.lines),
                ))  # fmt: skip
                return
            backoff = self.policy.backoff_base * 2 ** (len(self._failures) - 1)
            await asyncio.sleep(min(self.policy.backoff_max, backoff))

    def _fail(self, error: AspenError) -> None:
        self.failure, self.last_error, self.state = error, error.message, State.FAILED
        log.error("plugin %s: %s", self.spec.name, error.message)
        self._ready.set()

    async def _spawn(self, run: ProcessRun) -> None:
        spec = self.spec
        workdir = os.path.normpath(os.path.join(spec.directory, spec.cwd))
        command, ro_binds, proxy_env = spec.command, (), {}
        if self.egress is not None:
            try:
                command, ro_binds, proxy_env = await self.egress.behind(command)
            except OSError as exc:
                raise _Permanent(AspenError(ErrorCode.PLUGIN_LOAD_FAILED, f"no egress proxy: {exc}")) from None
        try:
            argv = self.sandbox.command(command, cwd=workdir, limits=self.limits, ro_binds=ro_binds)
        except AspenError as exc:  # no bubblewrap: a restart cannot fix it
            raise _Permanent(exc) from None
        if self.sandbox.active:  # bwrap enters workdir itself (an absolute cwd replaces /work)
            run_in, env = "/", job_env({**spec.env, **proxy_env}, HOME=SANDBOX_WORKDIR)
        else:
            run_in, env = workdir, job_env(spec.env, HOME=workdir)
        loop = asyncio.get_running_loop()
        try:
            await loop.subprocess_exec(
                lambda: run, *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=env, cwd=run_in, start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            raise _Permanent(AspenError(ErrorCode.PLUGIN_LOAD_FAILED, f"cannot start {spec.command[0]!r}: {exc}"))
        # (a command missing inside the sandbox shows as an exit during the handshake)

    async def _handshake(self, run: ProcessRun) -> None:
        spec, timeout = self.spec, self.policy.startup_timeout
        info = _decode(await self._during_start(run, run.peer.call("plugin_info", EMPTY, timeout)))
        if not isinstance(info, dict) or info.get("name") != spec.name:
            got = info.get("name") if isinstance(info, dict) else info
            raise _Permanent(AspenError(
                ErrorCode.PLUGIN_LOAD_FAILED, f"plugin name mismatch: the manifest says {spec.name!r}, the process {got!r}",
            ))  # fmt: skip
        if not isinstance(info.get("handles"), list) or sorted(info["handles"]) != sorted(spec.handles):
            raise _Permanent(AspenError(
                ErrorCode.PLUGIN_LOAD_FAILED,
                f"plugin {spec.name!r} handles {info.get('handles')!r}, the manifest says {list(spec.handles)!r}",
            ))  # fmt: skip
        ok = _decode(await self._during_start(run, run.peer.call("init", raw({"name": spec.name}), timeout)))
        if ok != {"ok": True}:
            raise AspenError(ErrorCode.PLUGIN_LOAD_FAILED, f"init answered {ok!r}")

    async def _during_start(self, run: ProcessRun, call: Any) -> msgspec.Raw:
        """A handshake call, cut short if the process dies first."""
        call = asyncio.ensure_future(call)
        await asyncio.wait([call, run.fault], return_when=asyncio.FIRST_COMPLETED)
        if not call.done():
            call.cancel()
            raise AspenError(ErrorCode.PLUGIN_LOAD_FAILED, f"during the handshake: {run.fault.result()}")
        return call.result()

    async def _probe(self, run: ProcessRun) -> None:
        while True:
            await asyncio.sleep(self.policy.health_interval)
            try:
                ok = _decode(await run.peer.call("health", EMPTY, self.policy.health_timeout))
            except AspenError as exc:
                ok = exc.code
            if ok != {"ok": True}:
                run._fault(f"unhealthy: health answered {ok!r}")
                return

    async def _graceful(self, run: ProcessRun) -> None:
        grace = self.policy.stop_grace
        with suppress(AspenError):
            await run.peer.call("shutdown", EMPTY, grace)
        if run.transport is not None:
            run.transport.get_pipe_transport(0).close()  # type: ignore[union-attr]
        if await _exits_within(run, grace):
            return
        signal_group(run.pid, signal.SIGTERM)
        await _exits_within(run, grace)

    async def _reap(self, run: ProcessRun, tree: list[int] | None = None) -> None:
        """Nothing of the run left: its group killed, waited for, pipes closed.
        ``tree``: its processes, when they were listed before it was told to exit."""
        if run.transport is not None:
            # The sandboxed process is bwrap's grandchild, in its own session: it dies
            # with bwrap (--die-with-parent), but only after it, so it is waited for too.
            if not run.exited.done():
                tree = [*(tree or ()), *await asyncio.to_thread(descendants, run.pid)]
            tree = tree or []
            signal_group(run.pid, signal.SIGKILL)  # also what the process left in its group
            for pid in tree:
                with suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            await asyncio.shield(run.exited)
            # Its last output (the stderr lines worth keeping) may still be in the pipes.
            with suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(run.drained), DRAIN_SECONDS)
            run.transport.close()
            deadline = time.monotonic() + self.policy.stop_grace
            while any(map(running, tree)) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        run.peer.close(AspenError(ErrorCode.PLUGIN_TRAP, f"plugin '{self.spec.name}' was restarted"))


async def _exits_within(run: ProcessRun, seconds: float) -> bool:
    try:
        await asyncio.wait_for(asyncio.shield(run.exited), seconds)
        return True
    except TimeoutError:
        return False
