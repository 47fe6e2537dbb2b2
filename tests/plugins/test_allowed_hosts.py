"""The manifest's ``allowed_hosts``: the patterns a process plugin may name,
each refusal with its own code, and what a pattern matches."""

from __future__ import annotations

import json

import msgspec
import pytest

from aspen.errors import AspenError, ErrorCode
from aspen.plugins import bundle
from aspen.plugins.process.egress_hosts import MAX_ALLOWED_HOSTS, MAX_PATTERN_BYTES, parse_pattern, reachable
from aspen.plugins.rules import parse_manifest
from tests.plugins.test_bundle import ECHO, MANIFEST, code_of

RAW = json.loads((ECHO / "plugin.json").read_bytes())
INVALID = ErrorCode.PLUGIN_ALLOWED_HOSTS_INVALID


@pytest.mark.parametrize(
    "hosts",
    [
        ("api.example.com", "*.example.com:8443", "10.0.0.1:5432", "127.0.0.1:8080", "[2001:db8::1]:443", "[::1]"),
        tuple(f"h{i}.example.com" for i in range(MAX_ALLOWED_HOSTS)),
        ("a" * 63 + "." + "b" * 63 + ".example.com:65535",),
    ],
)
def test_valid_patterns(hosts):
    assert code_of(allowed_hosts=hosts) is None


@pytest.mark.parametrize(
    ("hosts", "code"),
    [
        (tuple(f"h{i}.example.com" for i in range(MAX_ALLOWED_HOSTS + 1)), ErrorCode.PLUGIN_TOO_MANY_ALLOWED_HOSTS),
        (("a." * (MAX_PATTERN_BYTES // 2) + "com",), INVALID),
        (("x" * 64 + ".com",), INVALID),  # a label is at most 63 bytes
        (("",), INVALID),
        (("*",), INVALID),
        (("*.",), INVALID),
        (("*.*.example.com",), INVALID),
        (("api.*.com",), INVALID),
        (("API.example.com",), INVALID),
        ((" example.com",), INVALID),
        (("a..b",), INVALID),
        (("-a.com",), INVALID),
        (("example.com:0",), INVALID),
        (("example.com:65536",), INVALID),
        (("example.com:080",), INVALID),
        (("example.com:",), INVALID),
        (("example.com:http",), INVALID),
        (("http://example.com",), INVALID),
        (("example.com/path",), INVALID),
        (("user@example.com",), INVALID),
        (("::1",), INVALID),  # an IPv6 literal is bracketed
        (("[::1",), INVALID),
        (("[1.2.3.4]:80",), INVALID),
        (("*.10.0.0.1",), INVALID),
        (("256.1.1.1",), INVALID),
        (("a\0b",), INVALID),
    ],
)
def test_hostile_patterns_refused_with_their_code(hosts, code):
    assert code_of(allowed_hosts=hosts) == code


def test_allowed_hosts_on_a_wasm_manifest_is_refused():
    assert code_of(runtime="wasm", command=(), allowed_hosts=("api.example.com",)) == INVALID
    assert code_of(runtime="wasm", command=()) is None


@pytest.mark.parametrize("value", ['"example.com"', "[1]", '{"a": 1}', "[null]", "[[" + "[" * 40 + "]]"])
def test_wrong_types_do_not_decode(value):
    text = json.dumps(RAW)[:-1] + f', "allowed_hosts": {value}}}'
    with pytest.raises(AspenError) as info:
        parse_manifest(text)
    assert info.value.code == ErrorCode.INVALID_MANIFEST


def test_the_bundle_carries_them_so_its_hash_covers_them():
    allowed = msgspec.structs.replace(MANIFEST, allowed_hosts=("api.example.com",))
    packed = bundle.pack(ECHO, allowed)
    assert bundle.check(packed, allowed).allowed_hosts == ("api.example.com",)
    with pytest.raises(AspenError) as info:
        bundle.check(packed, MANIFEST)  # a manifest edited after packing no longer matches
    assert info.value.code == ErrorCode.PLUGIN_HASH_MISMATCH


def test_what_a_pattern_matches():
    exact, wild, ip = parse_pattern("api.example.com"), parse_pattern("*.example.com:8443"), parse_pattern("10.0.0.1:5")
    assert exact.matches("api.example.com", 443) and exact.matches("api.example.com", 80)
    assert not exact.matches("api.example.com", 8443) and not exact.matches("x.api.example.com", 443)
    assert wild.matches("a.b.example.com", 8443) and not wild.matches("example.com", 8443)
    assert not wild.matches("evilexample.com", 8443) and not wild.matches("a.example.com", 443)
    assert ip.matches("10.0.0.1", 5) and not ip.matches("10.0.0.2", 5)
    # names reach only global addresses; an IP literal pattern reaches exactly its own
    for address in (
        "127.0.0.1",
        "10.1.2.3",
        "169.254.169.254",
        "::1",
        "fe80::1",
        "::ffff:127.0.0.1",
        "100.64.0.1",
        "224.0.0.1",
    ):
        assert not reachable(address, exact), address
    assert reachable("93.184.215.14", exact) and reachable("2606:2800::1", exact)
    assert reachable("10.0.0.1", ip) and not reachable("10.0.0.2", ip)
