"""The hostile corpus of the WASM isolation tests, sent through the process
protocol: every escape is refused with the same code, and nothing changes."""

from __future__ import annotations

from aspen.plugins.namespace import RESERVED_PREFIXES
from tests.plugins.test_isolation import FOREIGN_KEYS, GATED, _unchanged, denied, seeded  # noqa: F401 (a fixture)

OWN = "__plugin:hostile:"


async def host_call(plugin, method: str, params: dict) -> dict:
    """The plugin's own call into the node, as its reply reports it."""
    reply = await plugin.request("HostCall", {"method": method, "params": params})
    assert reply["type"] == "HostReply"
    return reply["body"]


async def test_own_namespace_works(launch, kv):
    hostile = await launch()
    assert "result" in await host_call(hostile, "kv_put", {"key": OWN + "a", "value": "1"})
    assert (await host_call(hostile, "kv_get", {"key": OWN + "a"}))["result"]["kv"]["value"] == "1"
    page = await host_call(hostile, "kv_scan", {"prefix": OWN})
    assert [e["key"] for e in page["result"]["entries"]] == [OWN + "a"]


async def test_single_key_and_scan_escapes_refused_as_for_wasm(launch, kv, seeded):  # noqa: F811 (the fixture)
    hostile = await launch()
    for key in FOREIGN_KEYS:
        assert denied(await host_call(hostile, "kv_get", {"key": key})), key
        assert denied(await host_call(hostile, "kv_put", {"key": key, "value": "pwned"})), key
        assert denied(await host_call(hostile, "kv_delete", {"key": key})), key
        assert denied(await host_call(hostile, "kv_cas", {"key": key, "expected": "original", "new": "pwned"})), key
        ops = [{"op": "put", "key": OWN + "ok", "value": "v"}, {"op": "put", "key": key, "value": "pwned"}]
        assert denied(await host_call(hostile, "kv_batch", {"ops": ops})), key
        txn = {"success": [{"op": "put", "key": OWN + "t", "value": "v"}, {"op": "get", "key": key}]}
        assert denied(await host_call(hostile, "kv_transaction", txn)), key
    for prefix in [*RESERVED_PREFIXES, "__plugin:echo:", "__plugin:", "__", "", "__plugin:hostile"]:
        assert denied(await host_call(hostile, "kv_scan", {"prefix": prefix})), prefix
    assert await kv.get(OWN + "ok") is None and await kv.get(OWN + "t") is None
    await _unchanged(kv, seeded)


async def test_every_gated_method_denied_without_its_permission(launch, kv):
    hostile = await launch(permissions=frozenset())
    for function, (args, permission) in GATED.items():
        args = {k: (v.replace("noperm", "hostile") if isinstance(v, str) else v) for k, v in args.items()}
        reply = await host_call(hostile, function.removeprefix("aspen_"), args)
        assert denied(reply, "PERMISSION_DENIED"), function
        assert reply["error"]["details"] == {"plugin": "hostile", "permission": permission}
    assert await kv.current_revision() == 0


async def test_malformed_and_unknown_host_calls_fail_only_themselves(launch):
    hostile = await launch()
    assert denied(await host_call(hostile, "kv_get", {"key": 5}), "INVALID_KEY")
    assert denied(await host_call(hostile, "no_such_method", {}), "UNKNOWN_REQUEST")
    bad_json = {"line": '{"jsonrpc":"2.0","id":ID,"method":"kv_get","params":{oops'}
    assert denied((await hostile.request("RawHost", bad_json))["body"], "BAD_REQUEST")
    deep = '{"jsonrpc":"2.0","id":ID,"method":"kv_get","params":{"key":' + "[" * 100 + "]" * 100 + "}}"
    assert denied((await hostile.request("RawHost", {"line": deep}))["body"], "BAD_REQUEST")
    huge = '{"jsonrpc":"2.0","id":ID,"method":"kv_put","params":{"key":"' + OWN + 'a","value":"PAD"}}'
    assert denied((await hostile.request("RawHost", {"line": huge, "pad": 5 << 20}))["body"], "MESSAGE_TOO_LARGE")
    not_object = '{"jsonrpc":"2.0","id":ID,"method":"kv_get","params":[1]}'
    assert denied((await hostile.request("RawHost", {"line": not_object}))["body"], "BAD_REQUEST")
    assert hostile.restarts == 0 and (await hostile.request("Echo", {}))["type"] == "Echo"
