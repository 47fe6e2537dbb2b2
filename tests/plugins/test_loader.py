"""The one loader: what every plugin runtime is given, and the seam where
another kind of runtime plugs in."""

from __future__ import annotations

import pytest

from aspen.errors import AspenError, ErrorCode
from aspen.plugins.gate import PluginGate
from aspen.plugins.loader import MAX_HOST_REPLY_BYTES, RUNTIME_KINDS, WASM, PluginLoader
from aspen.plugins.manifest import EffectiveLimits
from aspen.plugins.runtime import PluginRuntime
from aspen.plugins.state import LifecycleState
from aspen.rpc.handler import Request, RequestContext
from tests.plugins.conftest import plugin_files


async def test_a_second_runtime_kind_plugs_in_beside_wasm(kv, built):
    made = []

    def counting(name, module, env, limits):
        made.append(name)
        return PluginRuntime(name, module, env, limits)

    loader = PluginLoader(kv=kv, kinds={**RUNTIME_KINDS, "counting": counting})
    manifest, wasm = plugin_files(built, "echo")
    handler = await loader.load(manifest, wasm, kind="counting")
    try:
        assert made == ["echo"] and handler.runtime.state is LifecycleState.READY
        assert (await handler.handle(Request("Ping", {}), RequestContext())).type == "Pong"
    finally:
        await handler.runtime.stop(0)
    with pytest.raises(AspenError) as err:
        await loader.load(manifest, wasm, kind="process")  # not built yet
    assert err.value.code == ErrorCode.PLUGIN_LOAD_FAILED


async def test_every_runtime_gets_the_nodes_services_and_a_capped_reply(kv, blobs, built, signing_key):
    loader = PluginLoader(kv=kv, blobs=blobs, signing_key=signing_key, node_info={"node_id": "n"})
    _, wasm = plugin_files(built, "echo")
    big = EffectiveLimits(
        memory_bytes=64 << 20, timeout_ms=1000, max_input_bytes=1024, max_output_bytes=1024, concurrency=1
    )
    runtime = await loader.instantiate(
        "echo", wasm, PluginGate("echo", frozenset(), ("__plugin:echo:",)), big, kind=WASM
    )
    try:
        env = runtime.env
        assert (env.kv, env.blobs, env.signing_key, env.node_info) == (kv, blobs, signing_key, {"node_id": "n"})
        assert env.max_reply_bytes == MAX_HOST_REPLY_BYTES
        assert runtime.state is LifecycleState.INITIALIZING
    finally:
        await runtime.stop(0)


async def test_a_module_that_does_not_load_gets_the_callers_code(kv):
    loader = PluginLoader(kv=kv)
    limits = EffectiveLimits(memory_bytes=1 << 20, timeout_ms=100, max_input_bytes=1, max_output_bytes=1, concurrency=1)
    gate = PluginGate("junk", frozenset(), ("__plugin:junk:",))
    for code in (ErrorCode.PLUGIN_LOAD_FAILED, ErrorCode.INVALID_JOB):
        with pytest.raises(AspenError) as err:
            await loader.instantiate("junk", b"\0asm junk", gate, limits, bad_module=code)
        assert err.value.code == code and "does not load" in err.value.message
