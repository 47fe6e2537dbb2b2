"""Guest faults are error responses for that request only: the plugin, the
other plugins and the node keep serving."""

from __future__ import annotations

import asyncio
import time

import pytest

from aspen.errors import AspenError
from aspen.plugins.manifest import PluginLimits
from aspen.plugins.runtime import DEGRADED_AFTER
from aspen.rpc.handler import Request, RequestContext


async def _code(handler, rtype: str, body: dict | None = None) -> str:
    with pytest.raises(AspenError) as err:
        await handler.handle(Request(rtype, body or {}), RequestContext())
    return err.value.code


async def test_infinite_loop_is_interrupted(load):
    faults = await load("hostile/faults", limits=PluginLimits(timeout_ms=300))
    start = time.monotonic()
    assert await _code(faults, "Spin") == "PLUGIN_TIMEOUT"
    assert time.monotonic() - start < 3.0
    assert (await faults.handle(Request("Fine", {}), RequestContext())).type == "Fine"


async def test_spinning_plugin_does_not_block_others(load):
    faults = await load("hostile/faults", limits=PluginLimits(timeout_ms=1500))
    echo = await load("echo")
    spin = asyncio.create_task(_code(faults, "Spin"))
    await asyncio.sleep(0.1)
    start = time.monotonic()
    for _ in range(20):
        assert (await echo.handle(Request("Ping", {}), RequestContext())).type == "Pong"
    assert time.monotonic() - start < 1.0  # served while the other plugin spins
    assert not spin.done()
    assert await spin == "PLUGIN_TIMEOUT"


async def test_memory_bomb_is_oom(load):
    faults = await load("hostile/faults", limits=PluginLimits(memory_bytes=4 << 20))
    assert await _code(faults, "MemBomb") == "PLUGIN_OOM"
    assert (await faults.handle(Request("Fine", {}), RequestContext())).type == "Fine"


async def test_gigantic_output_is_bad_output(load):
    faults = await load("hostile/faults", limits=PluginLimits(max_output_bytes=1 << 20))
    assert await _code(faults, "BigOutput", {"mib": 2}) == "PLUGIN_BAD_OUTPUT"


async def test_output_bigger_than_memory_is_a_fault_not_a_crash(load):
    faults = await load("hostile/faults")
    code = await _code(faults, "BigOutput", {"mib": 64})
    assert code in ("PLUGIN_OOM", "PLUGIN_TRAP")  # the guest cannot even build it
    assert (await faults.handle(Request("Fine", {}), RequestContext())).type == "Fine"


async def test_non_json_output_is_bad_output(load):
    faults = await load("hostile/faults")
    assert await _code(faults, "NotJson") == "PLUGIN_BAD_OUTPUT"


async def test_trap(load):
    faults = await load("hostile/faults")
    assert await _code(faults, "Trap") == "PLUGIN_TRAP"
    assert (await faults.handle(Request("Fine", {}), RequestContext())).type == "Fine"


async def test_repeated_faults_degrade_and_a_healthy_call_restores(load):
    faults = await load("hostile/faults")
    rt = faults.runtime
    for _ in range(DEGRADED_AFTER):
        assert rt.state == "ready"
        await _code(faults, "Trap")
    assert rt.state == "degraded"
    # Degraded plugins still serve; a clean call makes them Ready again.
    assert (await faults.handle(Request("Fine", {}), RequestContext())).type == "Fine"
    assert rt.state == "ready"


async def test_health_probe_restores_ready(load):
    faults = await load("hostile/faults")
    rt = faults.runtime
    for _ in range(DEGRADED_AFTER):
        await _code(faults, "NotJson")
    assert rt.state == "degraded"
    assert rt.has_export("plugin_health")
    assert await rt.probe() is True
    assert rt.state == "ready"


async def test_input_over_the_limit_is_refused_before_the_call(load):
    echo = await load("echo", limits=PluginLimits(max_input_bytes=1024))
    assert await _code(echo, "Echo", {"blob": "x" * 2000}) == "MESSAGE_TOO_LARGE"
    assert echo.runtime.faults == 0


async def test_concurrency_limit_overload(load):
    faults = await load("hostile/faults", limits=PluginLimits(timeout_ms=800, concurrency=1))
    calls = [asyncio.create_task(_code(faults, "Spin")) for _ in range(40)]
    codes = await asyncio.gather(*calls)
    assert "PLUGIN_OVERLOADED" in codes
    # Calls queued behind the spinning ones expire instead of piling up.
    assert set(codes) <= {"PLUGIN_OVERLOADED", "PLUGIN_TIMEOUT", "TIMEOUT"}


async def test_limits_are_capped_by_node_config(load):
    faults = await load("hostile/faults", limits=PluginLimits(timeout_ms=3_600_000, memory_bytes=1 << 30))
    assert faults.runtime.limits.timeout_ms == 5000
    assert faults.runtime.limits.memory_bytes == 16 << 20


async def test_impostor_is_refused(host, load):
    with pytest.raises(AspenError) as err:
        await load("hostile/impostor")
    assert err.value.code == "PLUGIN_LOAD_FAILED"
    assert "mismatch" in err.value.message and "'echo'" in err.value.message
    assert host.handlers() == ()


async def test_garbage_module_is_refused(host, built):
    from tests.plugins.conftest import plugin_files

    manifest, _ = plugin_files(built, "echo")
    with pytest.raises(AspenError) as err:
        await host.load(manifest, b"\x00asm\x01\x00\x00\x00garbage")
    assert err.value.code == "PLUGIN_LOAD_FAILED"


async def test_wasm_hash_mismatch_is_refused(load):
    with pytest.raises(AspenError) as err:
        await load("echo", wasm_hash="0" * 64)
    assert err.value.code == "PLUGIN_HASH_MISMATCH"


async def test_too_new_api_version_is_refused(load):
    with pytest.raises(AspenError) as err:
        await load("echo", min_api_version="99.0.0")
    assert err.value.code == "PLUGIN_API_VERSION_UNSUPPORTED"


async def test_overlapping_prefixes_between_plugins_refused(load):
    await load("kv-counter")
    with pytest.raises(AspenError) as err:
        await load("echo", kv_prefixes=("counter:x:",))
    assert err.value.code == "PLUGIN_PREFIX_OVERLAP"
    assert err.value.details["other"] == "kv-counter"


async def test_disabled_manifest_is_not_loaded(load):
    with pytest.raises(AspenError) as err:
        await load("echo", enabled=False)
    assert err.value.code == "PLUGIN_LOAD_FAILED"


async def test_same_plugin_twice_refused(load):
    await load("echo")
    with pytest.raises(AspenError) as err:
        await load("echo")
    assert err.value.code == "PLUGIN_LOAD_FAILED"


async def test_invalid_manifest_via_replace_refused_at_load(load):
    with pytest.raises(AspenError) as err:
        await load("echo", kv_prefixes=("__auth:",))
    assert err.value.code == "PLUGIN_PREFIX_INVALID"


async def test_lifecycle_exports_are_called(host, load, caplog):
    caplog.set_level("INFO", logger="aspen.plugins")
    await load("hostile/faults")
    assert any("[plugin faults] faults initialised" in r.getMessage() for r in caplog.records)
    await host.unload("faults")
    assert any("[plugin faults] faults shutting down" in r.getMessage() for r in caplog.records)


async def test_fault_through_the_registry_is_an_error_response(load):
    from aspen.rpc.registry import HandlerRegistry

    faults = await load("hostile/faults")
    echo = await load("echo")
    registry = HandlerRegistry([faults, echo])
    reply = await registry.dispatch(Request("Trap", {}), RequestContext())
    assert reply.type == "Error" and reply.body["code"] == "PLUGIN_TRAP"
    assert (await registry.dispatch(Request("Ping", {}), RequestContext())).type == "Pong"


async def test_calls_run_in_parallel_on_the_pool(load):
    # Two spinning calls end by wall-clock timeout: on one instance they would
    # take two timeouts back to back, on the pool they overlap.
    faults = await load("hostile/faults", limits=PluginLimits(timeout_ms=1000, concurrency=2))
    start = time.monotonic()
    codes = await asyncio.gather(_code(faults, "Spin"), _code(faults, "Spin"))
    assert codes == ["PLUGIN_TIMEOUT", "PLUGIN_TIMEOUT"]
    assert time.monotonic() - start < 1.8
    assert faults.runtime.worker_count == 2


async def test_memory_limit_below_the_module_minimum_fails_the_load(load):
    with pytest.raises(AspenError) as err:
        await load("echo", limits=PluginLimits(memory_bytes=65536))
    assert err.value.code == "PLUGIN_LOAD_FAILED"
