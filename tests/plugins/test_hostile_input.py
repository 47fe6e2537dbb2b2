"""Hostile input at every plugin entry point: JSON nested thousands deep
(host-function arguments sent by a real guest, guest output, plugin.json from
a file, from the CLI and in a PluginInstall body), integers past 64 bits, and
a guest that makes the same error on every call. Each is a clear error with
its own code, never a ``RecursionError`` and never a traceback per call."""

from __future__ import annotations

import json
import logging
import time
from types import SimpleNamespace

import msgspec
import pytest
from typer.testing import CliRunner

from aspen.cli.main import app
from aspen.errors import AspenError, ErrorCode
from aspen.plugins.extism_bridge import MAX_ARG_DEPTH, host_reply
from aspen.plugins.faults import MAX_OUTPUT_DEPTH
from aspen.plugins.host_functions import IMPLEMENTATIONS
from aspen.plugins.lifecycle_handler import create
from aspen.plugins.log_throttle import INTERVAL_SECONDS
from aspen.plugins.loop_bridge import CallContext
from aspen.plugins.manifest import MAX_MANIFEST_DEPTH, PluginPermissions
from aspen.plugins.rules import parse_manifest
from aspen.rpc.handler import Request, RequestContext
from aspen.rpc.registry import HandlerRegistry

DEEP = 5000  # far past the ~1 000 levels where msgspec raises RecursionError
OWN = "__plugin:snoop:"
ALL = PluginPermissions(**{p: True for p in PluginPermissions.__struct_fields__})


def nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


async def raw_call(snoop, function: str, raw: str) -> dict:
    """The guest hands ``raw`` to ``function`` as its argument bytes, unparsed."""
    reply = await snoop.handle(Request("HostCallRaw", {"function": function, "raw": raw}), RequestContext())
    assert reply.type == "HostReply"
    return reply.body


def code(reply: dict) -> str | None:
    return reply.get("error", {}).get("code")


def tracebacks(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info]


@pytest.fixture
async def snoop(load):
    return await load("hostile/snoop", permissions=ALL)


class Clock:
    """A monotonic clock the test moves: the throttle's interval passes at once."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- host-function arguments -------------------------------------------------------------


@pytest.mark.parametrize("function", sorted(IMPLEMENTATIONS))
async def test_deep_host_arguments_are_bad_request(snoop, kv, caplog, function):
    caplog.set_level(logging.DEBUG, logger="aspen")
    shapes = [f'{{"key": {nested(DEEP)}}}', nested(DEEP), '{"a":' * DEEP + "1" + "}" * DEEP, "[" * DEEP]
    for raw in shapes:
        reply = await raw_call(snoop, function, raw)
        assert code(reply) == ErrorCode.BAD_REQUEST, reply
        assert f"the limit is {MAX_ARG_DEPTH}" in reply["error"]["message"]
    assert tracebacks(caplog) == []
    assert await kv.current_revision() == 0


async def test_nesting_up_to_the_limit_is_decoded(snoop, kv):
    k = '"k"'
    at_limit = f'{{"key": {nested(MAX_ARG_DEPTH - 1, k)}}}'
    assert code(await raw_call(snoop, "aspen_kv_get", at_limit)) == ErrorCode.INVALID_KEY  # decoded, then judged
    beyond = f'{{"key": {nested(MAX_ARG_DEPTH, k)}}}'
    assert code(await raw_call(snoop, "aspen_kv_get", beyond)) == ErrorCode.BAD_REQUEST
    # Brackets and escaped quotes inside strings are text, not nesting.
    key = OWN + '[{\\"' * 200
    put = await raw_call(snoop, "aspen_kv_put", json.dumps({"key": key, "value": "]" * 500}))
    assert "ok" in put, put
    assert (await kv.get(key)).value == b"]" * 500


@pytest.mark.parametrize(
    "function, raw",
    [
        ("aspen_kv_scan", '{"prefix": "__plugin:snoop:", "limit": 18446744073709551616}'),
        (
            "aspen_kv_transaction",
            '{"compares": [{"key": "__plugin:snoop:a", "target": "version", "value": -1' + "0" * 19 + "}]}",
        ),
        (
            "aspen_kv_transaction",
            '{"success": [{"op": "range", "prefix": "__plugin:snoop:", "limit": 1' + "0" * 30 + "}]}",
        ),
        ("aspen_blob_get", '{"hash": "' + "0" * 64 + '", "offset": 9223372036854775808}'),
        ("aspen_blob_get", '{"hash": "HASH", "length": 1' + "0" * 40 + "}"),
        ("aspen_random_bytes", '{"n": 1' + "0" * 40 + "}"),
    ],
)
async def test_integers_out_of_range_are_invalid_argument(snoop, blobs, caplog, function, raw):
    stored = await blobs.add_bytes(b"a blob that exists")
    reply = await raw_call(snoop, function, raw.replace("HASH", stored.hash))
    assert code(reply) == ErrorCode.INVALID_ARGUMENT, reply
    assert "64-bit" in reply["error"]["message"] or function == "aspen_random_bytes"
    assert tracebacks(caplog) == []


async def test_integers_at_the_64_bit_bounds_are_accepted(snoop):
    compare = {"key": OWN + "a", "target": "version", "op": "<", "value": 2**63 - 1}
    for value in (2**63 - 1, -(2**63)):
        reply = await raw_call(snoop, "aspen_kv_transaction", json.dumps({"compares": [{**compare, "value": value}]}))
        assert "ok" in reply, reply  # compared, not refused


async def test_malformed_values_of_any_type_are_errors(snoop, caplog):
    cases = [
        ("aspen_log", {"level": ["error"], "message": "x"}, ErrorCode.INVALID_ARGUMENT),
        ("aspen_kv_transaction", {"success": [{"op": ["put"], "key": OWN + "a"}]}, ErrorCode.INVALID_ARGUMENT),
        ("aspen_kv_get", {"key": 1e300}, ErrorCode.INVALID_KEY),
    ]
    for function, args, expected in cases:
        assert code(await raw_call(snoop, function, json.dumps(args))) == expected, function
    assert code(await raw_call(snoop, "aspen_kv_get", '{"key": 1e400}')) == ErrorCode.BAD_REQUEST
    assert tracebacks(caplog) == []


# --- guest output ----------------------------------------------------------------------


async def test_deep_guest_output_is_bad_output(load, caplog):
    faults = await load("hostile/faults")
    for depth in (DEEP, MAX_OUTPUT_DEPTH - 1):  # the reply object and its body add two levels
        with pytest.raises(AspenError) as err:
            await faults.handle(Request("DeepOutput", {"depth": depth}), RequestContext())
        assert err.value.code == ErrorCode.PLUGIN_BAD_OUTPUT and "nested" in err.value.message
    ok = await faults.handle(Request("DeepOutput", {"depth": MAX_OUTPUT_DEPTH - 2}), RequestContext())
    assert ok.type == "Deep" and json.dumps(ok.body["v"]) == "[" * (MAX_OUTPUT_DEPTH - 2) + "]" * (MAX_OUTPUT_DEPTH - 2)
    assert (await faults.handle(Request("Fine", {}), RequestContext())).type == "Fine"
    assert tracebacks(caplog) == []


async def test_a_deep_in_process_request_body_is_validation_error(load, caplog):
    """Over RPC the envelope's depth check refuses it first; a job or a
    plugin's in-process call reaches the handler with the value itself."""
    echo = await load("echo")
    deep: list = []
    for _ in range(DEEP):
        deep = [deep]
    with pytest.raises(AspenError) as err:
        await echo.handle(Request("Echo", {"message": "x", "v": deep}), RequestContext())
    assert err.value.code == ErrorCode.VALIDATION_ERROR and "nest" in err.value.message
    assert (await echo.handle(Request("Echo", {"message": "x"}), RequestContext())).type == "Echo"
    assert tracebacks(caplog) == []


# --- plugin manifests ------------------------------------------------------------------


def deep_manifest(depth: int = DEEP) -> str:
    return '{"name": "echo", "version": "0.1.0", "handles": ["Ping"], "tags": ' + nested(depth, '"t"') + "}"


def test_deep_plugin_json_is_invalid_manifest():
    with pytest.raises(AspenError) as err:
        parse_manifest(deep_manifest().encode())
    assert err.value.code == ErrorCode.INVALID_MANIFEST
    assert f"the limit is {MAX_MANIFEST_DEPTH}" in err.value.message
    with pytest.raises(AspenError) as err:  # within the limit it is decoded and judged field by field
        parse_manifest(deep_manifest(MAX_MANIFEST_DEPTH - 1))
    assert err.value.code == ErrorCode.INVALID_MANIFEST and "tags" in err.value.message


async def test_deep_plugin_json_file_is_refused_at_load(host, built, tmp_path):
    manifest = tmp_path / "plugin.json"
    manifest.write_text(deep_manifest())
    with pytest.raises(AspenError) as err:
        await host.load_files(manifest, built / "echo" / "plugin.wasm")
    assert err.value.code == ErrorCode.INVALID_MANIFEST


@pytest.mark.parametrize("command", ["install", "sign"])
def test_deep_plugin_json_is_refused_by_the_cli(tmp_path, built, command):
    manifest = tmp_path / "plugin.json"
    manifest.write_text(deep_manifest())
    args = ["plugin", command, str(built / "echo" / "plugin.wasm"), "--manifest", str(manifest)]
    if command == "install":
        args += ["--url", "http://127.0.0.1:9"]  # never reached: the manifest is refused first
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    assert CliRunner().invoke(app, ["plugin", "keygen"], env=env).exit_code == 0
    out = CliRunner().invoke(app, args, env=env)
    assert out.exit_code == 1, out.output
    assert "INVALID_MANIFEST" in out.output and "RecursionError" not in out.output


async def test_deep_manifest_in_a_plugin_install_body_is_validation_error(kv, blobs, built):
    reg = HandlerRegistry()
    config = SimpleNamespace(sections={"plugins": {"allow_unsigned": True, "drain_seconds": 5}})
    reg.add(create(SimpleNamespace(kv=kv, blobs=blobs, registry=reg, node_id="n1", config=config, plugins=None)))
    await reg.start()
    try:
        deep: object = "t"
        for _ in range(DEEP):
            deep = [deep]
        manifest = {"name": "echo", "version": "0.1.0", "handles": ["Ping"], "tags": deep}
        body = {"manifest": manifest, "wasm": (built / "echo" / "plugin.wasm").read_bytes()}
        resp = await reg.dispatch(Request("PluginInstall", body), RequestContext())
        assert resp.type == "Error" and resp.body["code"] == ErrorCode.VALIDATION_ERROR, resp.body
        assert "tags" in resp.body["message"]
    finally:
        await reg.stop()


# --- a guest that floods errors ----------------------------------------------------------


async def test_a_flood_of_denied_calls_is_logged_once_per_interval(snoop, caplog):
    clock = Clock()
    snoop.runtime.env.gate.log.clock = clock
    caplog.set_level(logging.WARNING, logger="aspen.plugins")
    for _ in range(25):
        assert code(await raw_call(snoop, "aspen_kv_get", '{"key": "__apps:secret"}')) == ErrorCode.KV_PREFIX_DENIED
    lines = [r.getMessage() for r in caplog.records if "denied" in r.getMessage()]
    assert len(lines) == 1 and "snoop" in lines[0]
    clock.now += INTERVAL_SECONDS
    await raw_call(snoop, "aspen_kv_get", '{"key": "__apps:secret"}')
    lines = [r.getMessage() for r in caplog.records if "denied" in r.getMessage()]
    assert len(lines) == 2 and "24 more like it" in lines[1], lines
    assert tracebacks(caplog) == []


async def test_a_flood_of_faults_is_logged_once_per_interval(load, caplog):
    faults = await load("hostile/faults")
    clock = Clock()
    faults.runtime.env.gate.log.clock = clock
    caplog.set_level(logging.WARNING, logger="aspen.plugins")
    for _ in range(10):
        with pytest.raises(AspenError):
            await faults.handle(Request("Trap", {}), RequestContext())
    lines = [r.getMessage() for r in caplog.records if "fault PLUGIN_TRAP" in r.getMessage()]
    assert len(lines) == 1
    clock.now += INTERVAL_SECONDS
    with pytest.raises(AspenError):
        await faults.handle(Request("Trap", {}), RequestContext())
    lines = [r.getMessage() for r in caplog.records if "fault PLUGIN_TRAP" in r.getMessage()]
    assert len(lines) == 2 and "9 more like it" in lines[1], lines
    assert tracebacks(caplog) == []


async def test_a_host_bug_on_every_call_logs_one_traceback_per_interval(snoop, caplog):
    """No host function fails this way any more, so a broken one stands in for
    the next bug: it goes through the same reply path as every real one."""
    env = snoop.runtime.env
    clock = Clock()
    env.gate.log.clock = clock

    def broken(ctx, args):
        raise RuntimeError("a host bug")

    caplog.set_level(logging.ERROR, logger="aspen.plugins")
    for _ in range(20):
        reply = msgspec.json.decode(host_reply(CallContext(env, time.monotonic() + 5), "aspen_broken", broken, b"{}"))
        assert code(reply) == ErrorCode.INTERNAL
    assert len(tracebacks(caplog)) == 1
    clock.now += INTERVAL_SECONDS
    host_reply(CallContext(env, time.monotonic() + 5), "aspen_broken", broken, b"{}")
    assert len(tracebacks(caplog)) == 2 and "19 more like it" in tracebacks(caplog)[1].getMessage()
