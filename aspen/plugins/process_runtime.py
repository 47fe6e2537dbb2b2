"""The ``process`` runtime kind: a supervised plugin process that answers like
:class:`~aspen.plugins.runtime.PluginRuntime` (``call``, ``has_export``,
``state``, ``probe``, ``stop``), so the loader, the handler and the
reconciler's blue/green treat it exactly like a WASM plugin.

Each instance unpacks its bundle into a private directory of its own under
the node's bundle root (two versions, or two generations of one, never share
one) and removes it when it stops. The process's calls into the node go
through the :class:`~aspen.plugins.gate.PluginGate` of its ``HostEnv``: the
one gate. ``plugin_info`` — the loader's first handshake call — starts the
process, whose own handshake (``plugin_info``, ``init``) the supervisor runs.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

import aspen
from aspen.errors import AspenError, ErrorCode
from aspen.jobs.sandbox import Sandbox
from aspen.plugins.bundle import Bundle, read, unpack
from aspen.plugins.loop_bridge import HostEnv
from aspen.plugins.manifest import EffectiveLimits
from aspen.plugins.process.host_calls import GatedHostCalls
from aspen.plugins.process.supervisor import ProcessSpec, ProcessSupervisor, RestartPolicy, State
from aspen.plugins.runtime import admit
from aspen.plugins.state import SERVING, LifecycleState

_encode = msgspec.json.Encoder().encode
# the callback exports (aspen.plugins.handler.CALLBACKS) and the protocol methods that take them
_CALLBACK_METHODS = {"plugin_on_timer": "on_timer", "plugin_on_hook_event": "on_hook_event"}


def sdk_paths() -> tuple[str, ...]:
    """The Python SDK a plugin may import (``aspen.plugin_sdk`` and msgspec),
    shown read-only in the sandbox; their parents go on ``PYTHONPATH``."""
    return tuple(str(Path(m.__file__).resolve().parent) for m in (aspen, msgspec))


class ProcessKind:
    """``RUNTIME_KINDS["process"]``: unpacks under ``root`` and runs in
    ``sandbox``'s mode and uid (the loader checked the bundle against the
    manifest before)."""

    def __init__(self, root: Path, sandbox: Sandbox, policy: RestartPolicy | None = None) -> None:
        self.root = root
        self.sandbox = sandbox
        self.policy = policy

    def __call__(self, name: str, module: bytes, env: HostEnv, limits: EffectiveLimits) -> ProcessRuntime:
        bundle = read(module, name)
        self.root.mkdir(mode=0o711, parents=True, exist_ok=True)
        directory = self.root / f"{name}-{uuid.uuid4().hex[:12]}"
        try:
            unpack(bundle, directory)
        except OSError as exc:
            shutil.rmtree(directory, ignore_errors=True)
            raise AspenError(ErrorCode.PLUGIN_BUNDLE_INVALID, f"plugin '{name}': cannot unpack: {exc}") from None
        return ProcessRuntime(name, bundle, directory, env, limits, self)


class ProcessRuntime:
    def __init__(
        self, name: str, bundle: Bundle, directory: Path, env: HostEnv, limits: EffectiveLimits, kind: ProcessKind
    ) -> None:
        self.name, self.env, self.limits, self.directory = name, env, limits, directory
        self._state = LifecycleState.INITIALIZING
        self._in_flight = 0
        self._idle = asyncio.Event()
        command = list(bundle.command)
        if command[0] in bundle.files:  # the program is the bundle's own
            command[0] = str(directory / command[0])
        sdk = sdk_paths()
        python_path = ":".join(str(Path(p).parent) for p in sdk)
        extra = {**bundle.env, "PYTHONPATH": ":".join(filter(None, (bundle.env.get("PYTHONPATH"), python_path)))}
        spec = ProcessSpec(
            name, bundle.handles, tuple(command), str(directory), bundle.cwd, extra, bundle.allowed_hosts
        )
        base = kind.sandbox
        sandbox = Sandbox(base.mode, uid=base.uid, gid=base.gid, ro_binds=(*base.ro_binds, str(directory), *sdk))
        serve = GatedHostCalls(env, timeout=limits.timeout_ms / 1000)
        self.supervisor = ProcessSupervisor(spec, serve, sandbox=sandbox, policy=kind.policy)

    @property
    def state(self) -> LifecycleState:
        if self._state in SERVING and self.supervisor.state is State.FAILED:
            return LifecycleState.FAILED
        return self._state

    @state.setter
    def state(self, value: LifecycleState) -> None:
        self._state = value

    def has_export(self, export: str) -> bool:
        return export in ("plugin_info", "handle_request") or export in _CALLBACK_METHODS

    def info(self) -> dict[str, Any]:
        """The supervisor's view (state, pid, restarts, last stderr lines) for ``plugin info``."""
        return self.supervisor.info()

    async def call(
        self, export: str, data: bytes, decode: Callable[[bytes], Any], *,
        deadline: float | None = None, lifecycle: bool = False,
    ) -> Any:  # fmt: skip
        if export == "plugin_info" and lifecycle:
            await self.supervisor.start()
            return decode(_encode({"name": self.name, "handles": list(self.supervisor.spec.handles)}))
        method = _CALLBACK_METHODS.get(export)
        if export != "handle_request" and method is None:
            raise AspenError(ErrorCode.UNKNOWN_REQUEST, f"plugin '{self.name}' has no export {export}")
        admit(self, data, lifecycle)
        timeout = self.limits.timeout_ms / 1000
        if deadline is not None:
            timeout = min(timeout, max(0.0, deadline - time.monotonic()))
        self._in_flight += 1
        self._idle.clear()
        try:
            if method is not None:  # a callback: the process's answer (an object) as it is
                return decode(bytes(await self.supervisor.call(method, msgspec.Raw(data), timeout)))
            message = msgspec.json.decode(data)
            reply = await self.supervisor.request(
                message["type"], message.get("body") or {}, caller=message.get("caller"), app=message.get("app"),
                timeout=timeout,
            )  # fmt: skip
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()
        return decode(_encode(reply))

    async def probe(self) -> bool:
        """The supervisor probes the process itself; a Running one is healthy."""
        ok = self.supervisor.state is State.RUNNING
        if ok and self._state is LifecycleState.DEGRADED:
            self._state = LifecycleState.READY
        return ok

    async def stop(self, drain_seconds: float) -> None:
        """Refuse new calls, let running ones finish, stop the process, remove its files."""
        if self._state in (LifecycleState.STOPPING, LifecycleState.STOPPED):
            return
        self._state = LifecycleState.STOPPING
        if self._in_flight:
            try:
                await asyncio.wait_for(self._idle.wait(), drain_seconds)
            except TimeoutError:
                pass
        try:
            await self.supervisor.stop()
        finally:
            await asyncio.to_thread(shutil.rmtree, self.directory, True)
            self._state = LifecycleState.STOPPED


def default_kind() -> ProcessKind:
    """Bundles under the temporary directory, in the required sandbox (a node passes its own)."""
    return ProcessKind(Path(tempfile.gettempdir()) / "aspen-plugin-bundles", Sandbox())
