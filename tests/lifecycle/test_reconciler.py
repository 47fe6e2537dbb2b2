"""The reconciler with real WASM: install, upgrade, failed loads that leave
the old version serving, signature checks at load, dependency order,
catch-up on start, and two reconcilers sharing one SQLite file."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aspen.errors import AspenError, ErrorCode
from aspen.plugins import requests as r
from aspen.plugins.admin import PluginAdmin
from aspen.plugins.manifest import PluginDependency
from aspen.plugins.signing import public_key_hex, wasm_hash
from aspen.plugins.store import InstalledPlugin, PluginStore, push_history
from aspen.rpc.handler import Request, RequestContext
from aspen.storage.blobs import LocalBlobStore
from aspen.storage.sqlite import SqliteKeyValueStore
from tests.lifecycle.conftest import ask, signed, start_reconciler, vers_manifest


def install_body(author, modules, version, **overrides):
    wasm = modules[version]
    return r.PluginInstall(manifest=signed(author, vers_manifest(version, **overrides), wasm), wasm=wasm)


async def served_version(registry) -> str | None:
    resp = await ask(registry)
    return resp.body.get("version") if resp.type == "VersionEchoResult" else None


async def test_install_then_upgrade_serves_new_version(node, author, modules):
    result = await node.install(install_body(author, modules, "1.0.0"), upgrade=False)
    assert result.status.state == "ready" and result.status.version == "1.0.0"
    assert await served_version(node.rec.registry) == "1.0.0"
    result = await node.install(install_body(author, modules, "2.0.0"), upgrade=True)
    assert result.status.version == "2.0.0" and result.generation == 2
    assert await served_version(node.rec.registry) == "2.0.0"
    assert node.rec.get("vers").manifest.version == "2.0.0"


async def test_failed_init_leaves_old_serving_and_failure_visible(node, author, modules):
    await node.install(install_body(author, modules, "1.0.0"), upgrade=False)
    result = await node.install(install_body(author, modules, "3.0.0"), upgrade=True)
    status = result.status
    assert status.version == "1.0.0" and status.state == "ready"
    assert status.wanted_version == "3.0.0"
    assert status.error is not None and status.error.code == ErrorCode.PLUGIN_LOAD_FAILED
    assert "refusing to start" in status.error.message
    assert await served_version(node.rec.registry) == "1.0.0"
    info = await node.info(r.PluginInfo(name="vers"))
    assert info.status.error.code == ErrorCode.PLUGIN_LOAD_FAILED
    assert [s.error.code for s in info.nodes] == [ErrorCode.PLUGIN_LOAD_FAILED]
    # rolling back to the serving version clears the failure
    result = await node.rollback(r.PluginRollback(name="vers"))
    assert result.status.error is None and result.status.version == "1.0.0"


async def test_module_that_is_not_wasm_fails_to_load(node, author, modules):
    await node.install(install_body(author, modules, "1.0.0"), upgrade=False)
    junk = b"\x00asm garbage that will not compile"
    body = r.PluginInstall(manifest=signed(author, vers_manifest("2.0.0"), junk), wasm=junk)
    result = await node.install(body, upgrade=True)
    assert result.status.error.code == ErrorCode.PLUGIN_LOAD_FAILED
    assert await served_version(node.rec.registry) == "1.0.0"


async def write_record_directly(store: PluginStore, manifest, wasm, *, generation=None):
    """Bypass install validation (as a raw KV write would) to test the load-time checks."""
    await store.blobs.add_bytes(wasm)
    existing = await store.get(manifest.name)
    gen = generation or (existing.record.generation + 1 if existing else 1)
    await store.write(InstalledPlugin(manifest=manifest, generation=gen), existing)


@pytest.mark.parametrize("case", ["missing", "tampered", "wrong-key", "untrusted"])
async def test_signature_checked_again_at_load(node, author, modules, case):
    await node.install(install_body(author, modules, "1.0.0"), upgrade=False)
    v2 = modules["2.0.0"]
    stranger = Ed25519PrivateKey.generate()
    if case == "missing":
        manifest, wasm, code = vers_manifest("2.0.0"), v2, ErrorCode.PLUGIN_SIGNATURE_MISSING
    elif case == "tampered":  # the signature covers other bytes than the stored module
        manifest = signed(author, vers_manifest("2.0.0"), modules["3.0.0"])
        wasm, code = v2, ErrorCode.PLUGIN_HASH_MISMATCH
    elif case == "wrong-key":  # signed by a stranger, claiming the trusted author
        sig = signed(stranger, vers_manifest("2.0.0"), v2).signature
        manifest = vers_manifest("2.0.0", signature=msgspec.structs.replace(sig, author_pubkey=public_key_hex(author)))
        wasm, code = v2, ErrorCode.PLUGIN_SIGNATURE_INVALID
    else:
        manifest, wasm, code = signed(stranger, vers_manifest("2.0.0"), v2), v2, ErrorCode.PLUGIN_AUTHOR_UNTRUSTED
    manifest = msgspec.structs.replace(manifest, wasm_hash=wasm_hash(wasm))
    await write_record_directly(node.store, manifest, wasm)
    status = await node.rec.settle("vers", 2, 10)
    assert status.error is not None and status.error.code == code
    assert await served_version(node.rec.registry) == "1.0.0"


@pytest.mark.parametrize("case", ["missing", "tampered", "wrong-key", "untrusted"])
async def test_signature_checked_at_install(node, author, modules, case):
    v1 = modules["1.0.0"]
    stranger = Ed25519PrivateKey.generate()
    if case == "missing":
        manifest, code = vers_manifest("1.0.0"), ErrorCode.PLUGIN_SIGNATURE_MISSING
    elif case == "tampered":
        manifest, code = signed(author, vers_manifest("1.0.0"), v1 + b"\x00"), ErrorCode.PLUGIN_HASH_MISMATCH
    elif case == "wrong-key":
        sig = signed(stranger, vers_manifest("1.0.0"), v1).signature
        manifest = vers_manifest("1.0.0", signature=msgspec.structs.replace(sig, author_pubkey=public_key_hex(author)))
        code = ErrorCode.PLUGIN_SIGNATURE_INVALID
    else:
        manifest, code = signed(stranger, vers_manifest("1.0.0"), v1), ErrorCode.PLUGIN_AUTHOR_UNTRUSTED
    with pytest.raises(AspenError) as info:
        await node.install(r.PluginInstall(manifest=manifest, wasm=v1), upgrade=False)
    assert info.value.code == code
    assert await node.store.get("vers") is None


async def test_allow_unsigned_relaxes(kv, blobs, modules):
    rec = await start_reconciler(kv, blobs, allow_unsigned=True)
    try:
        admin = PluginAdmin(rec)
        result = await admin.install(
            r.PluginInstall(manifest=vers_manifest("1.0.0"), wasm=modules["1.0.0"]), upgrade=False
        )
        assert result.status.state == "ready"
        assert await served_version(rec.registry) == "1.0.0"
    finally:
        await rec.stop()


async def test_disable_enable_remove(node, author, modules):
    await node.install(install_body(author, modules, "1.0.0"), upgrade=False)
    await node.disable(r.PluginDisable(name="vers"))
    resp = await ask(node.rec.registry)
    assert resp.type == "Error" and resp.body["code"] == ErrorCode.UNKNOWN_REQUEST
    await node.enable(r.PluginEnable(name="vers"))
    assert await served_version(node.rec.registry) == "1.0.0"
    await node.remove(r.PluginRemove(name="vers"))
    assert await node.store.get("vers") is None
    assert (await ask(node.rec.registry)).type == "Error"
    assert (await node.list()).count == 0


async def test_dependencies_load_in_order_and_guard_removal(kv, blobs, node, author, modules):
    await node.install(install_body(author, modules, "1.0.0"), upgrade=False)
    wasm = modules["user"]
    user = vers_manifest("1.0.0", name="user", handles=("UserEcho",), dependencies=(PluginDependency("vers", "1.0.0"),))
    result = await node.install(r.PluginInstall(manifest=signed(author, user, wasm), wasm=wasm), upgrade=False)
    assert result.status.state == "ready"
    with pytest.raises(AspenError) as info:
        await node.remove(r.PluginRemove(name="vers"))
    assert info.value.code == ErrorCode.PLUGIN_HAS_DEPENDENTS
    with pytest.raises(AspenError) as info:
        await node.disable(r.PluginDisable(name="vers"))
    assert info.value.code == ErrorCode.PLUGIN_HAS_DEPENDENTS
    assert (await node.deps(r.PluginDeps(name="user"))).dependencies[0].is_satisfied
    assert (await node.deps(r.PluginDeps(name="vers"))).dependents == ["user"]
    assert (await node.deps(r.PluginDeps())).load_order == ["vers", "user"]

    # A fresh node loads 'vers' before 'user' although 'user' sorts first: a
    # dependent only loads once its dependency serves on the node.
    fresh = await start_reconciler(kv, blobs, node_id="fresh")
    try:
        assert fresh.status("vers").state == "ready" and fresh.status("user").state == "ready"
    finally:
        await fresh.stop()

    disabled = await node.disable(r.PluginDisable(name="vers", cascade=True))
    assert disabled.affected == ["user"]
    assert not (await node.store.require("user")).record.manifest.enabled
    assert node.rec.status("user").state == "absent"
    with pytest.raises(AspenError) as info:  # enabling 'user' needs 'vers' enabled first
        await node.enable(r.PluginEnable(name="user"))
    assert info.value.code == ErrorCode.PLUGIN_DEPENDENCY_MISSING
    removed = await node.remove(r.PluginRemove(name="vers", cascade=True))
    assert removed.removed == ["user", "vers"]


async def test_node_that_was_down_catches_up(kv, blobs, author, modules):
    rec = await start_reconciler(kv, blobs)
    await rec.trust.add(public_key_hex(author))
    await PluginAdmin(rec).install(install_body(author, modules, "1.0.0"), upgrade=False)
    await rec.stop()
    # while "down": an upgrade is written by someone else
    store = PluginStore(kv, blobs)
    stored = await store.require("vers")
    v2 = install_body(author, modules, "2.0.0")
    manifest = msgspec.structs.replace(v2.manifest, wasm_hash=wasm_hash(modules["2.0.0"]))
    await blobs.add_bytes(modules["2.0.0"])
    history, _ = push_history(stored.record)
    await store.write(msgspec.structs.replace(stored.record, manifest=manifest, generation=2, history=history), stored)
    rec2 = await start_reconciler(kv, blobs)
    try:
        assert await served_version(rec2.registry) == "2.0.0"
    finally:
        await rec2.stop()


async def test_two_reconcilers_share_one_sqlite_file(tmp_path, author, modules):
    """Two stores on one file (as two node processes would be): an install
    through one is served by the other, with no reload call."""
    kv_a = await SqliteKeyValueStore.open(tmp_path / "shared.sqlite", durable=False)
    kv_b = await SqliteKeyValueStore.open(tmp_path / "shared.sqlite", durable=False)
    blobs_a = await LocalBlobStore.open(tmp_path / "blobs")
    blobs_b = await LocalBlobStore.open(tmp_path / "blobs")
    a = await start_reconciler(kv_a, blobs_a, node_id="a")
    b = await start_reconciler(kv_b, blobs_b, node_id="b")
    try:
        await a.trust.add(public_key_hex(author))
        await PluginAdmin(a).install(install_body(author, modules, "1.0.0"), upgrade=False)
        status = await b.settle("vers", 1, 10)
        assert status.state == "ready" and await served_version(b.registry) == "1.0.0"
        await PluginAdmin(a).install(install_body(author, modules, "2.0.0"), upgrade=True)
        await b.settle("vers", 2, 10)
        assert await served_version(b.registry) == "2.0.0"
        await asyncio.sleep(0.3)
        info = await PluginAdmin(b).info(r.PluginInfo(name="vers"))
        assert sorted((s.node_id, s.version) for s in info.nodes) == [("a", "2.0.0"), ("b", "2.0.0")]
    finally:
        await a.stop()
        await b.stop()
        for s in (kv_a, kv_b, blobs_a, blobs_b):
            await s.close()


async def test_modules_stay_protected_while_current_or_kept(node, author, modules, blobs):
    await node.install(install_body(author, modules, "1.0.0"), upgrade=False)
    up = await node.install(install_body(author, modules, "2.0.0"), upgrade=True)
    v1 = (await node.store.require("vers")).record.history[0].wasm_hash
    assert await blobs.gc(grace_seconds=0) == []  # current and kept-for-rollback are both protected
    await node.rollback(r.PluginRollback(name="vers"))
    assert await blobs.gc(grace_seconds=0) == [up.wasm_hash]  # 2.0.0 fell off the history
    assert await blobs.has(v1)
    await node.remove(r.PluginRemove(name="vers"))
    assert await blobs.gc(grace_seconds=0) == [v1]


async def test_forced_removal_of_a_dependency_retires_its_dependents_visibly(node, author, modules):
    await node.install(install_body(author, modules, "1.0.0"), upgrade=False)
    wasm = modules["user"]
    user = vers_manifest("1.0.0", name="user", handles=("UserEcho",), dependencies=(PluginDependency("vers"),))
    await node.install(r.PluginInstall(manifest=signed(author, user, wasm), wasm=wasm), upgrade=False)
    assert (await node.remove(r.PluginRemove(name="vers", force=True))).removed == ["vers"]
    status = node.rec.status("user")
    assert status.state == "failed" and status.error.code == ErrorCode.PLUGIN_DEPENDENCY_MISSING
    resp = await node.rec.registry.dispatch(Request("UserEcho", {}), RequestContext())
    assert resp.type == "Error"
    check = await node.check()
    assert not check.is_valid and {p.code for p in check.problems} == {ErrorCode.PLUGIN_DEPENDENCY_MISSING}
