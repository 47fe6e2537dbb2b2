"""The cluster trust store in KV."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aspen.errors import AspenError, ErrorCode
from aspen.plugins.signing import public_key_hex, sign_wasm
from aspen.plugins.trust import TRUST_PREFIX, TrustStore


async def test_add_is_idempotent_and_listed(kv):
    store = TrustStore(kv)
    key = public_key_hex(Ed25519PrivateKey.generate())
    first = await store.add(key, "alice")
    again = await store.add(key, "renamed")
    assert again == first
    assert [a.pubkey for a in await store.list()] == [key]
    assert (await kv.get(TRUST_PREFIX + key)) is not None


async def test_remove_and_require(kv):
    store = TrustStore(kv)
    author = Ed25519PrivateKey.generate()
    sig = sign_wasm(author, b"module")
    await store.add(sig.author_pubkey)
    await store.require(sig)
    await store.remove(sig.author_pubkey)
    with pytest.raises(AspenError) as info:
        await store.require(sig)
    assert info.value.code == ErrorCode.PLUGIN_AUTHOR_UNTRUSTED
    with pytest.raises(AspenError) as info:
        await store.remove(sig.author_pubkey)
    assert info.value.code == ErrorCode.PLUGIN_AUTHOR_NOT_FOUND


@pytest.mark.parametrize("bad", ["", "xyz", "ab" * 31, "AB" * 32])
async def test_bad_keys_are_refused(kv, bad):
    with pytest.raises(AspenError) as info:
        await TrustStore(kv).add(bad)
    assert info.value.code == ErrorCode.PLUGIN_SIGNATURE_MALFORMED
    assert (await kv.scan(TRUST_PREFIX)).entries == []
