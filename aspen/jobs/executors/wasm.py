"""The ``wasm`` executor: an Extism module exporting ``execute_job``, run by
the plugin runtime (its sandbox, memory and time limits, host functions
behind the permission gate).

Payload, one of:

- ``{"module": "<blake3 hash>", "input": …}``: a module stored as a blob. It
  runs with **no** permissions (log, clock and the like only; KV and blob
  host calls are denied) under the node's default plugin limits;
  ``timeout_ms``/``memory_bytes`` may ask for less or, up to the node cap, more.
- ``{"plugin": "<name>", "input": …}``: an installed plugin (the node's
  reconciler), with the permissions and KV prefixes of its manifest.

Both kinds of runtime come from :class:`~aspen.plugins.loader.PluginLoader`.

The guest reads ``{"job_id", "attempt", "input"}`` and writes a JSON object:
``{"result": …, "log": "optional text"}`` or
``{"error": {"code", "message", "retryable": true}}``.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Any

import msgspec

from aspen.errors import AspenError, ErrorCode
from aspen.jobs.model import Job, JobFailure
from aspen.jobs.worker import JobContext
from aspen.plugins.gate import PluginGate
from aspen.plugins.loader import PluginLoader
from aspen.plugins.manifest import NodePluginLimits, PluginLimits, effective_limits
from aspen.plugins.runtime import PluginRuntime
from aspen.plugins.state import LifecycleState

EXPORT = "execute_job"
MAX_CACHED_MODULES = 16
_HASH_CHARS = frozenset("0123456789abcdef")


class WasmPayload(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    module: str | None = None
    plugin: str | None = None
    input: Any = None
    timeout_ms: int | None = None
    memory_bytes: int | None = None


class GuestError(msgspec.Struct, frozen=True):
    code: str = "GUEST_ERROR"
    message: str = ""
    retryable: bool = True


class GuestOutput(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    result: Any = None
    log: str | None = None
    error: GuestError | None = None


def parse_payload(payload: Any) -> WasmPayload:
    try:
        spec = msgspec.convert(payload, WasmPayload)
    except msgspec.ValidationError as exc:
        raise AspenError(ErrorCode.INVALID_JOB, f"bad wasm payload: {exc}") from exc
    if (spec.module is None) == (spec.plugin is None):
        raise AspenError(ErrorCode.INVALID_JOB, "give exactly one of module (a blob hash) or plugin (a name)")
    if spec.module is not None and (len(spec.module) != 64 or not set(spec.module) <= _HASH_CHARS):
        raise AspenError(ErrorCode.INVALID_JOB, "module must be a BLAKE3 hash: 64 lowercase hex digits")
    for name in ("timeout_ms", "memory_bytes"):
        value = getattr(spec, name)
        if value is not None and value < 1:
            raise AspenError(ErrorCode.INVALID_JOB, f"{name} must be positive")
    return spec


def _leb(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated LEB128")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def exported_functions(wasm: bytes) -> set[str]:
    """Names of the functions a module exports (its export section)."""
    if wasm[:4] != b"\0asm":
        raise AspenError(ErrorCode.INVALID_JOB, "the module is not WebAssembly (no \\0asm magic)")
    names: set[str] = set()
    pos = 8
    try:
        while pos < len(wasm):
            section, size_pos = wasm[pos], pos + 1
            size, pos = _leb(wasm, size_pos)
            end = pos + size
            if section == 7:
                count, pos = _leb(wasm, pos)
                for _ in range(count):
                    length, pos = _leb(wasm, pos)
                    name = wasm[pos : pos + length].decode("utf-8", errors="replace")
                    kind = wasm[pos + length]
                    _, pos = _leb(wasm, pos + length + 1)
                    if kind == 0:
                        names.add(name)
            pos = end
    except (ValueError, IndexError) as exc:
        raise AspenError(ErrorCode.INVALID_JOB, f"the module is malformed: {exc}") from exc
    return names


class WasmWorker:
    job_types = frozenset({"wasm"})

    def __init__(self, node: Any = None, *, concurrency: int = 2, limits: NodePluginLimits | None = None) -> None:
        self.node = node
        self.concurrency = concurrency
        self.limits = limits or getattr(node, "plugin_limits", None) or NodePluginLimits()
        self._modules: OrderedDict[tuple[str, int | None, int | None], PluginRuntime] = OrderedDict()
        self._lock = asyncio.Lock()

    def validate(self, payload: Any) -> None:
        parse_payload(payload)

    async def _module_runtime(self, spec: WasmPayload, ctx: JobContext) -> PluginRuntime:
        key = (spec.module or "", spec.timeout_ms, spec.memory_bytes)
        async with self._lock:
            runtime = self._modules.get(key)
            if runtime is not None:
                self._modules.move_to_end(key)
                return runtime
            if ctx.blobs is None:
                raise AspenError(ErrorCode.EXECUTOR_UNAVAILABLE, "wasm modules need a blob store on this node")
            try:
                wasm = await ctx.blobs.get_bytes(spec.module)
            except AspenError as exc:
                if exc.code == ErrorCode.BLOB_NOT_FOUND:
                    raise AspenError(ErrorCode.INVALID_JOB, f"module {spec.module} is not in the blob store") from exc
                raise
            if EXPORT not in exported_functions(wasm):
                raise AspenError(ErrorCode.INVALID_JOB, f"the module does not export {EXPORT}")
            name = f"job-{spec.module[:16]}"
            gate = PluginGate(name, frozenset(), (f"__plugin:{name}:",))
            limits = effective_limits(
                PluginLimits(timeout_ms=spec.timeout_ms, memory_bytes=spec.memory_bytes, concurrency=self.concurrency),
                self.limits,
            )
            loader = PluginLoader(kv=ctx.kv, blobs=ctx.blobs, limits=self.limits)  # no signing key, no node info
            runtime = await loader.instantiate(name, wasm, gate, limits, bad_module=ErrorCode.INVALID_JOB)
            runtime.state = LifecycleState.READY  # a job module has no plugin_info/plugin_init handshake
            self._modules[key] = runtime
            while len(self._modules) > MAX_CACHED_MODULES:
                _, old = self._modules.popitem(last=False)
                await old.stop(0)
            return runtime

    def _plugin_runtime(self, name: str) -> PluginRuntime:
        host = getattr(self.node, "plugins", None)
        if host is None:
            raise AspenError(ErrorCode.EXECUTOR_UNAVAILABLE, "this node has no plugin host")
        return host.get(name).runtime

    async def execute(self, job: Job, ctx: JobContext) -> Any:
        spec = parse_payload(job.payload)
        runtime = await self._module_runtime(spec, ctx) if spec.module else self._plugin_runtime(spec.plugin)
        data = msgspec.json.encode({"job_id": job.id, "attempt": job.attempts, "input": spec.input})
        started = time.monotonic()
        try:
            raw = await runtime.call(EXPORT, data, bytes)
        except AspenError as exc:
            if exc.code == ErrorCode.PLUGIN_BAD_OUTPUT:
                raise JobFailure(exc.message, code=exc.code, retryable=False) from exc
            raise  # traps, timeouts, OOM: retryable
        ctx.log(f"{EXPORT} of {runtime.name} took {(time.monotonic() - started) * 1000:.1f} ms")
        try:
            out = msgspec.json.decode(raw, type=GuestOutput)
        except msgspec.DecodeError as exc:
            raise JobFailure(
                f"{EXPORT} must return a JSON object with result or error: {exc}",
                code=ErrorCode.PLUGIN_BAD_OUTPUT,
                retryable=False,
            ) from exc
        if out.log:
            ctx.log(out.log)
        if out.error is not None:
            raise JobFailure(out.error.message, code=out.error.code, retryable=out.error.retryable)
        return out.result

    async def close(self) -> None:
        async with self._lock:
            for runtime in self._modules.values():
                await runtime.stop(0)
            self._modules.clear()
