"""Ed25519 over the BLAKE3 digest: each way a signature is wrong has its own code."""

from __future__ import annotations

import os
import stat

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aspen.errors import AspenError, ErrorCode
from aspen.plugins.signing import (
    public_key_hex,
    read_key,
    sign_wasm,
    verify_wasm,
    wasm_hash,
    write_key,
)

WASM = b"\x00asm\x01\x00\x00\x00" + bytes(range(200))


def code_of(fn, *args, **kwargs) -> str:
    with pytest.raises(AspenError) as info:
        fn(*args, **kwargs)
    return info.value.code


def test_sign_then_verify_roundtrip_and_lengths():
    key = Ed25519PrivateKey.generate()
    sig = sign_wasm(key, WASM)
    assert len(sig.author_pubkey) == 64 and len(sig.signature) == 128
    assert sig.wasm_hash == wasm_hash(WASM)
    assert sig.author_pubkey == public_key_hex(key)
    verify_wasm(sig, WASM)  # does not raise


def test_signature_is_deterministic():
    key = Ed25519PrivateKey.generate()
    assert sign_wasm(key, WASM, now_ms=1).signature == sign_wasm(key, WASM, now_ms=2).signature


def test_missing_signature():
    assert code_of(verify_wasm, None, WASM) == ErrorCode.PLUGIN_SIGNATURE_MISSING


def test_tampered_bytes():
    sig = sign_wasm(Ed25519PrivateKey.generate(), WASM)
    tampered = WASM[:-1] + bytes([WASM[-1] ^ 1])
    assert code_of(verify_wasm, sig, tampered) == ErrorCode.PLUGIN_HASH_MISMATCH


def test_wrong_key():
    sig = sign_wasm(Ed25519PrivateKey.generate(), WASM)
    other = public_key_hex(Ed25519PrivateKey.generate())
    forged = msgspec.structs.replace(sig, author_pubkey=other)
    assert code_of(verify_wasm, forged, WASM) == ErrorCode.PLUGIN_SIGNATURE_INVALID


@pytest.mark.parametrize(
    "field, value",
    [
        ("author_pubkey", "zz" * 32),
        ("author_pubkey", "ab" * 31),
        ("signature", "ab" * 63),
        ("wasm_hash", "AB" * 32),
    ],
)
def test_malformed_fields(field, value):
    sig = msgspec.structs.replace(sign_wasm(Ed25519PrivateKey.generate(), WASM), **{field: value})
    assert code_of(verify_wasm, sig, WASM) == ErrorCode.PLUGIN_SIGNATURE_MALFORMED


def test_key_file_is_private_and_never_overwritten(tmp_path):
    path = tmp_path / "aspen" / "plugin-signing-key"
    key = Ed25519PrivateKey.generate()
    write_key(path, key)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert public_key_hex(read_key(path)) == public_key_hex(key)
    assert code_of(write_key, path, Ed25519PrivateKey.generate()) == ErrorCode.SIGNING_KEY_EXISTS
    assert public_key_hex(read_key(path)) == public_key_hex(key)


def test_bad_key_file(tmp_path):
    path = tmp_path / "key"
    path.write_text("not hex")
    assert code_of(read_key, path) == ErrorCode.SIGNING_KEY_INVALID
    assert code_of(read_key, tmp_path / "missing") == ErrorCode.SIGNING_KEY_INVALID
