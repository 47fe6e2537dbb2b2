"""The Plugin* requests through the registry, as a node dispatches them:
every refusal arrives as an Error with its own stable code."""

from __future__ import annotations

from types import SimpleNamespace

import msgspec
import pytest

from aspen.errors import ErrorCode
from aspen.plugins import requests as r
from aspen.plugins.lifecycle_handler import create
from aspen.plugins.manifest import PluginDependency
from aspen.plugins.signing import public_key_hex
from aspen.rpc.handler import Request, RequestContext
from aspen.rpc.registry import HandlerRegistry
from tests.lifecycle.conftest import signed, vers_manifest


@pytest.fixture
async def registry(kv, blobs, author):
    reg = HandlerRegistry()
    config = SimpleNamespace(sections={"plugins": {"drain_seconds": 5}})
    node = SimpleNamespace(kv=kv, blobs=blobs, registry=reg, node_id="n1", config=config, plugins=None)
    handler = create(node)
    reg.add(handler)
    await reg.start()
    assert node.plugins is handler.reconciler
    yield reg
    await reg.stop()


async def call(reg: HandlerRegistry, kind: str, body) -> tuple[str, dict]:
    payload = body if isinstance(body, dict) else msgspec.to_builtins(body)
    resp = await reg.dispatch(Request(kind, payload), RequestContext())
    return resp.type, resp.body


def install(author, modules, version, module=None, **overrides) -> dict:
    wasm = modules[module or version]
    manifest = signed(author, vers_manifest(version, **overrides), wasm)
    return msgspec.to_builtins(r.PluginInstall(manifest=manifest, wasm=wasm))


async def test_lifecycle_over_rpc(registry, author, modules):
    kind, body = await call(registry, "PluginInstall", install(author, modules, "1.0.0"))
    assert kind == "Error" and body["code"] == ErrorCode.PLUGIN_AUTHOR_UNTRUSTED
    kind, body = await call(registry, "PluginTrustAdd", r.PluginTrustAdd(pubkey=public_key_hex(author), name="me"))
    assert kind == "PluginTrustAddResult" and body["name"] == "me"
    kind, body = await call(registry, "PluginInstall", install(author, modules, "1.0.0"))
    assert kind == "PluginChangeResult" and body["status"]["state"] == "ready"
    assert (await call(registry, "VersionEcho", {"seq": 7}))[1] == {"version": "1.0.0", "seq": 7, "served_by": "vers"}

    refusals = [
        ("PluginInstall", install(author, modules, "1.0.0"), ErrorCode.PLUGIN_ALREADY_INSTALLED),
        ("PluginUpgrade", install(author, modules, "1.0.0"), ErrorCode.PLUGIN_VERSION_NOT_NEWER),
        ("PluginUpgrade", install(author, modules, "2.0.0", priority=1000), ErrorCode.PLUGIN_PRIORITY_OUT_OF_RANGE),
        ("PluginUpgrade", install(author, modules, "2.0.0", name="other"), ErrorCode.PLUGIN_NOT_FOUND),
        ("PluginRollback", r.PluginRollback(name="vers"), ErrorCode.PLUGIN_VERSION_NOT_FOUND),
        ("PluginInfo", r.PluginInfo(name="nope"), ErrorCode.PLUGIN_NOT_FOUND),
        (
            "PluginInstall",
            install(
                author,
                modules,
                "1.0.0",
                "user",
                name="user",
                handles=("U",),
                dependencies=(PluginDependency("vers", "9.0.0"),),
            ),
            ErrorCode.PLUGIN_DEPENDENCY_TOO_OLD,
        ),
        ("PluginTrustRemove", r.PluginTrustRemove(pubkey="ab" * 32), ErrorCode.PLUGIN_AUTHOR_NOT_FOUND),
        ("PluginInstall", {"manifest": {"name": "x"}}, ErrorCode.VALIDATION_ERROR),
        ("PluginInstall", {**install(author, modules, "2.0.0"), "wasm": None}, ErrorCode.BAD_REQUEST),
    ]
    for kind, body, code in refusals:
        got_kind, got = await call(registry, kind, body)
        assert got_kind == "Error" and got["code"] == code, (kind, got)

    kind, body = await call(registry, "PluginUpgrade", install(author, modules, "2.0.0"))
    assert body["status"]["version"] == "2.0.0"
    kind, body = await call(registry, "PluginList", {})
    assert body["count"] == 1 and body["plugins"][0]["history"] == ["1.0.0"]
    assert body["plugins"][0]["status"]["metrics"]["calls"] == 0  # metrics are per running version
    kind, body = await call(registry, "PluginCheck", {})
    assert body == {"is_valid": True, "checked": 1, "problems": []}
    kind, body = await call(registry, "PluginReload", {"name": "vers"})
    assert kind == "PluginReloadResult" and body["is_success"]
    kind, body = await call(registry, "PluginReload", {})
    assert body["is_success"] and body["plugin_count"] == 1
    kind, body = await call(registry, "PluginReload", {"name": 5})
    assert kind == "Error" and body["code"] == ErrorCode.VALIDATION_ERROR

    # untrusting the author: check reports it, and the next load refuses it
    await call(registry, "PluginTrustRemove", r.PluginTrustRemove(pubkey=public_key_hex(author)))
    kind, body = await call(registry, "PluginCheck", {})
    assert not body["is_valid"] and body["problems"][0]["code"] == ErrorCode.PLUGIN_AUTHOR_UNTRUSTED
    kind, body = await call(registry, "PluginReload", {"name": "vers"})
    assert not body["is_success"] and body["error"] == ErrorCode.PLUGIN_AUTHOR_UNTRUSTED
    assert (await call(registry, "VersionEcho", {"seq": 8}))[1]["version"] == "2.0.0"  # the old one still serves

    kind, body = await call(registry, "PluginRemove", r.PluginRemove(name="vers"))
    assert body == {"removed": ["vers"]}
    assert (await call(registry, "VersionEcho", {}))[1]["code"] == ErrorCode.UNKNOWN_REQUEST
