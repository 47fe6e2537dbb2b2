"""Ed25519 signatures over plugin modules.

The signed message is the raw 32-byte BLAKE3 digest of the WASM bytes (as in
Rust Aspen), so a signature is small, deterministic and checkable without
the manifest. Each way a signature can be wrong has its own code, because an
operator reacts differently to each: a missing signature means "sign it",
tampered bytes mean "this is not the module that was signed", a bad
signature means "signed by someone else's key" (or forged), and a malformed
one means a broken tool.

Signing keys live in files (hex of the 32-byte seed, mode 0600) that
``keygen`` never overwrites.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import blake3
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from aspen import clock
from aspen.errors import AspenError, ErrorCode
from aspen.plugins.manifest import PluginSignature

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX128 = re.compile(r"[0-9a-f]{128}")
KEY_FILE_NAME = "plugin-signing-key"


def wasm_hash(wasm: bytes) -> str:
    return blake3.blake3(wasm).hexdigest()


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_key_hex(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def parse_public_key(pubkey: object) -> Ed25519PublicKey:
    """A 64-hex-digit Ed25519 public key, or ``PLUGIN_SIGNATURE_MALFORMED``."""
    if not isinstance(pubkey, str) or not _HEX64.fullmatch(pubkey):
        raise AspenError(
            ErrorCode.PLUGIN_SIGNATURE_MALFORMED, "an author key must be 64 lowercase hex digits (32 bytes)"
        )
    try:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(pubkey))
    except ValueError as exc:
        raise AspenError(ErrorCode.PLUGIN_SIGNATURE_MALFORMED, f"not an Ed25519 public key: {exc}") from None


def sign_wasm(key: Ed25519PrivateKey, wasm: bytes, *, now_ms: int | None = None) -> PluginSignature:
    digest = blake3.blake3(wasm).digest()
    return PluginSignature(
        author_pubkey=public_key_hex(key),
        signature=key.sign(digest).hex(),
        wasm_hash=digest.hex(),
        signed_at_ms=clock.now_ms() if now_ms is None else now_ms,
    )


def verify_wasm(signature: PluginSignature | None, wasm: bytes, *, plugin: str = "") -> None:
    """Check ``signature`` against the module bytes, in the order: present,
    well-formed, covers these bytes, made by the key it names."""
    who = f"plugin '{plugin}'" if plugin else "the module"
    if signature is None:
        raise AspenError(ErrorCode.PLUGIN_SIGNATURE_MISSING, f"{who} is not signed", plugin=plugin)
    if not _HEX64.fullmatch(signature.wasm_hash) or not _HEX128.fullmatch(signature.signature):
        raise AspenError(
            ErrorCode.PLUGIN_SIGNATURE_MALFORMED,
            f"{who}: the signature must carry a 64-hex wasm_hash and a 128-hex signature",
            plugin=plugin,
        )
    public = parse_public_key(signature.author_pubkey)
    digest = blake3.blake3(wasm).digest()
    if digest.hex() != signature.wasm_hash:
        raise AspenError(
            ErrorCode.PLUGIN_HASH_MISMATCH,
            f"{who}: the module bytes are not the ones that were signed",
            plugin=plugin,
            expected=signature.wasm_hash,
            actual=digest.hex(),
        )
    try:
        public.verify(bytes.fromhex(signature.signature), digest)
    except InvalidSignature:
        raise AspenError(
            ErrorCode.PLUGIN_SIGNATURE_INVALID,
            f"{who}: the signature does not verify with author key {signature.author_pubkey[:16]}…",
            plugin=plugin,
            author=signature.author_pubkey,
        ) from None


# --- key files -------------------------------------------------------------


def default_key_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "aspen" / KEY_FILE_NAME


def write_key(path: Path, key: Ed25519PrivateKey) -> None:
    """Create ``path`` (mode 0600) holding the hex seed; an existing file is never replaced."""
    seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise AspenError(
            ErrorCode.SIGNING_KEY_EXISTS, f"{path} already exists; refusing to overwrite a signing key"
        ) from None
    with os.fdopen(fd, "w") as f:
        f.write(seed.hex() + "\n")


def read_key(path: Path) -> Ed25519PrivateKey:
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise AspenError(ErrorCode.SIGNING_KEY_INVALID, f"cannot read signing key {path}: {exc.strerror}") from None
    if not _HEX64.fullmatch(text):
        raise AspenError(ErrorCode.SIGNING_KEY_INVALID, f"{path} must hold 64 lowercase hex digits (a 32-byte seed)")
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(text))
