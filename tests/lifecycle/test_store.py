"""Install records in KV: compare-and-swap writes, unreadable records."""

from __future__ import annotations

import msgspec
import pytest

from aspen.errors import AspenError, ErrorCode
from aspen.plugins import requests as r
from aspen.plugins.store import (
    MAX_HISTORY,
    InstalledPlugin,
    PluginStore,
    push_history,
    record_key,
)
from tests.lifecycle.conftest import ask, signed, vers_manifest


async def test_concurrent_change_is_a_conflict_not_a_lost_update(kv, blobs):
    store = PluginStore(kv, blobs)
    await store.write(InstalledPlugin(vers_manifest("1.0.0")), None)
    first, second = await store.get("vers"), await store.get("vers")
    await store.write(msgspec.structs.replace(first.record, generation=2), first)
    with pytest.raises(AspenError) as info:
        await store.write(msgspec.structs.replace(second.record, generation=5), second)
    assert info.value.code == ErrorCode.PLUGIN_CONFLICT
    assert (await store.require("vers")).record.generation == 2
    with pytest.raises(AspenError) as info:
        await store.write(InstalledPlugin(vers_manifest("1.0.0")), None)  # "install" over an existing one
    assert info.value.code == ErrorCode.PLUGIN_CONFLICT


def test_history_is_bounded():
    record = InstalledPlugin(vers_manifest("1.0.0"))
    dropped_all = []
    for i in range(2, MAX_HISTORY + 4):
        history, dropped = push_history(record)
        dropped_all += dropped
        record = msgspec.structs.replace(record, manifest=vers_manifest(f"{i}.0.0"), history=history)
    assert len(record.history) == MAX_HISTORY
    assert [m.version for m in dropped_all] == ["1.0.0", "2.0.0"]  # 10 versions replaced, 8 kept


async def test_unreadable_record_does_not_stop_the_others(node, kv, author, modules):
    await kv.put(record_key("junk"), b"{not json")
    await kv.put(record_key("alias"), msgspec.json.encode(InstalledPlugin(vers_manifest("1.0.0"))))
    wasm = modules["1.0.0"]
    result = await node.install(
        r.PluginInstall(manifest=signed(author, vers_manifest("1.0.0"), wasm), wasm=wasm), upgrade=False
    )
    assert result.status.state == "ready"
    assert (await ask(node.rec.registry)).body["version"] == "1.0.0"
    check = await node.check()
    assert {(p.plugin, p.code) for p in check.problems} == {
        ("junk", ErrorCode.INVALID_MANIFEST),
        ("alias", ErrorCode.INVALID_MANIFEST),
    }
    with pytest.raises(AspenError) as info:
        await node.info(r.PluginInfo(name="junk"))
    assert info.value.code == ErrorCode.INVALID_MANIFEST
