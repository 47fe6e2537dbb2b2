"""Tokens offline: minting, attenuation, what they say of themselves, and a
property test that no chain of attenuations ever widens what a token allows."""

from __future__ import annotations

import itertools

import biscuit_auth as bz
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aspen.auth.tokens import (
    ANY,
    Right,
    admin_rights,
    attenuate,
    mint,
    parse_duration,
    read_facts,
    unverified,
)
from aspen.auth.verifier import TokenVerifier
from aspen.errors import AspenError, ErrorCode
from aspen.rpc.access import Need

KEYS = bz.KeyPair()
CLUSTER = "c-test"


def verifier(revoked: frozenset[str] = frozenset()) -> TokenVerifier:
    return TokenVerifier(KEYS.public_key, CLUSTER, lambda ids: not revoked.isdisjoint(ids))


def token(*rights: Right, ttl: float | None = None, subject: str = "alice") -> str:
    return mint(KEYS.private_key, subject=subject, rights=list(rights), ttl_seconds=ttl, audience=CLUSTER)


def allowed(text: str, need: Need, request_type: str = "ReadKey") -> bool:
    v = verifier()
    return v.allows(v.authenticate(text), need, request_type)


def test_prefix_rights_cover_keys_below_them_only():
    t = token(Right("kv:read", "app/"))
    assert allowed(t, Need("kv:read", "app/x", True))
    assert allowed(t, Need("kv:read", "app/", True))
    assert not allowed(t, Need("kv:read", "ap", True))
    assert not allowed(t, Need("kv:read", "other", True))
    assert not allowed(t, Need("kv:write", "app/x", True))


def test_exact_rights_name_their_resource():
    t = token(Right("job:submit", "build"), Right("plugin:call", "echo"))
    assert allowed(t, Need("job:submit", "build"))
    assert not allowed(t, Need("job:submit", "buildx"))
    assert not allowed(t, Need("plugin:call", "echo2"))


def test_star_never_implies_shell_or_nix():
    t = token(Right("job:submit", ANY))
    assert allowed(t, Need("job:submit", "build"))
    assert not allowed(t, Need("job:submit", "shell"))
    assert not allowed(t, Need("job:submit", "nix"))
    admin = token(*admin_rights())
    assert allowed(admin, Need("job:submit", "shell")) and allowed(admin, Need("job:submit", "nix"))
    assert not allowed(admin, Need("cluster:peer", ANY))  # only node credentials hold it


def test_attenuation_narrows_rights_types_and_time():
    parent = token(Right("kv:read", "app/"), Right("kv:write", "app/"))
    child = attenuate(parent, KEYS.public_key, rights=[Right("kv:read", "app/x/")], request_types=["ReadKey"])
    assert allowed(child, Need("kv:read", "app/x/1", True), "ReadKey")
    assert not allowed(child, Need("kv:read", "app/x/1", True), "ScanKeys")
    assert not allowed(child, Need("kv:read", "app/y", True), "ReadKey")
    assert not allowed(child, Need("kv:write", "app/x/1", True), "ReadKey")
    short = attenuate(parent, KEYS.public_key, ttl_seconds=60)
    facts = read_facts(unverified(short))
    assert facts.expires_at is not None and len(facts.revocation_ids) == 2
    assert facts.revocation_ids[0] == read_facts(unverified(parent)).revocation_ids[0]


def test_a_child_keeps_its_parents_identity():
    child = attenuate(token(Right("kv:read", "a/"), subject="bob"), KEYS.public_key, ttl_seconds=30)
    assert verifier().authenticate(child).subject == "bob"


def test_refusal_codes_in_their_order():
    v = verifier()
    for text, code in [
        (None, ErrorCode.UNAUTHENTICATED),
        ("", ErrorCode.UNAUTHENTICATED),
        ("not a token", ErrorCode.UNAUTHENTICATED),
        (mint(bz.KeyPair().private_key, subject="x", rights=[]), ErrorCode.INVALID_SIGNATURE),
        (mint(KEYS.private_key, subject="x", rights=[], audience="elsewhere"), ErrorCode.WRONG_AUDIENCE),
    ]:
        with pytest.raises(AspenError) as err:
            v.authenticate(text)
        assert err.value.code == code, text
    t = token(Right("kv:read", "a/"))
    rid = read_facts(unverified(t)).revocation_ids[0]
    with pytest.raises(AspenError) as err:
        verifier(frozenset({rid})).authenticate(t)
    assert err.value.code == ErrorCode.TOKEN_REVOKED
    with pytest.raises(AspenError) as err:
        v.authorize(v.authenticate(t), "WriteKey", [Need("kv:write", "a/b", True)])
    assert err.value.code == ErrorCode.UNAUTHORIZED
    assert err.value.details == {"operation": "kv:write", "resource": "a/b"}


def test_attenuation_needs_the_right_key_and_a_restriction():
    t = token(Right("kv:read", "a/"))
    with pytest.raises(AspenError) as err:
        attenuate(t, bz.KeyPair().public_key, ttl_seconds=10)
    assert err.value.code == ErrorCode.INVALID_SIGNATURE
    with pytest.raises(AspenError) as err:
        attenuate(t, KEYS.public_key)
    assert err.value.code == ErrorCode.INVALID_ARGUMENT
    with pytest.raises(AspenError) as err:
        Right("kv:everything", "a/")
    assert err.value.code == ErrorCode.INVALID_ARGUMENT


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("10m", 600), ("1h", 3600), ("7d", 604800)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_bad_durations():
    for bad in ("", "1y", "-5m", "ten"):
        with pytest.raises(AspenError):
            parse_duration(bad)


# --- no chain of attenuations widens -----------------------------------------

OPS = ["kv:read", "kv:write", "job:submit", "plugin:call", "lease"]
RESOURCES = ["", "a", "a/", "a/b", "a/b/c", "b/", "shell", "build", "echo", ANY]
TYPES = ["ReadKey", "WriteKey", "JobSubmit", "Echo"]
rights = st.builds(Right, st.sampled_from(OPS), st.sampled_from(RESOURCES))
restriction = st.fixed_dictionaries(
    {},
    optional={
        "rights": st.lists(rights, min_size=1, max_size=3),
        "request_types": st.lists(st.sampled_from(TYPES), min_size=1, max_size=2),
    },
).filter(bool)
needs = st.builds(
    lambda op, res: Need(op, res, op.startswith("kv:") and res != ANY), st.sampled_from(OPS), st.sampled_from(RESOURCES)
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    root=st.lists(rights, min_size=1, max_size=4),
    chain=st.lists(restriction, min_size=1, max_size=3),
    probes=st.lists(st.tuples(needs, st.sampled_from(TYPES)), min_size=1, max_size=6),
)
def test_no_chain_of_attenuations_widens(root, chain, probes):
    tokens = [token(*root)]
    for step in chain:
        tokens.append(attenuate(tokens[-1], KEYS.public_key, **step))
    v = verifier()
    principals = [v.authenticate(t) for t in tokens]
    for need, rtype in probes:
        verdicts = [v.allows(p, need, rtype) for p in principals]
        for parent, child in itertools.pairwise(verdicts):
            assert parent or not child, (need, rtype, verdicts)  # a child allows only what its parent does
