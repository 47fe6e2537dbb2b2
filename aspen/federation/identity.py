"""The cluster's federation identity: one Ed25519 key shared by every node
of the cluster, a name, and a self-signed identity document.

Embedded backend: ``{data_dir}/federation/cluster.key`` (0600). etcd:
``__federation:secret:cluster_key`` (never readable through the API), created once with a create-only
compare-and-swap, so every node signs with the same key. The key is what
other clusters trust; it is separate from the auth root key, which never
leaves the cluster's own token checks.

Signed bytes are ``domain || canonical JSON`` of a msgspec Struct: fields
in declaration order, no whitespace, so one document always has one
encoding and a signature covers exactly what is decoded.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import biscuit_auth as bz
import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from aspen.auth.keys import write_once
from aspen.clock import now_ms
from aspen.errors import AspenError, ErrorCode
from aspen.storage.protocol import KeyValueStore

CLUSTER_KEY = "__federation:secret:cluster_key"  # aspen.storage.keyspace.SECRET_PREFIXES: no request reads it
KEY_FILE = Path("federation") / "cluster.key"
IDENTITY_DOMAIN = b"aspen:cluster-identity:v1\x00"
_encoder = msgspec.json.Encoder()


def canonical(struct: msgspec.Struct) -> bytes:
    return _encoder.encode(struct)


def is_key_hex(text: object) -> bool:
    return isinstance(text, str) and len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def verify(public_hex: str, domain: bytes, payload: bytes, signature_hex: str) -> bool:
    """True when ``signature_hex`` is the key's Ed25519 signature of ``domain || payload``."""
    if not is_key_hex(public_hex) or not isinstance(signature_hex, str) or len(signature_hex) != 128:
        return False
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex))
        key.verify(bytes.fromhex(signature_hex), domain + payload)
    except (InvalidSignature, ValueError):
        return False
    return True


class IdentityDocument(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    cluster_key: str  # 64 hex: the Ed25519 public key
    name: str
    issued_at_ms: int
    version: int = 1


class SignedIdentity(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    document: IdentityDocument
    signature: str  # 128 hex over IDENTITY_DOMAIN || canonical(document)

    def is_valid(self) -> bool:
        return verify(self.document.cluster_key, IDENTITY_DOMAIN, canonical(self.document), self.signature)


class ClusterIdentity:
    def __init__(self, seed: bytes, name: str | None) -> None:
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.key_hex = self._key.public_key().public_bytes_raw().hex()
        self.name = name or f"aspen-{self.key_hex[:8]}"
        # the same key as a Biscuit root: proxy tokens this cluster issues are rooted in it
        self.biscuit_root = bz.PrivateKey.from_bytes(seed, bz.Algorithm.Ed25519)

    def sign(self, domain: bytes, payload: bytes) -> str:
        return self._key.sign(domain + payload).hex()

    def signed_identity(self) -> SignedIdentity:
        doc = IdentityDocument(cluster_key=self.key_hex, name=self.name, issued_at_ms=now_ms())
        return SignedIdentity(doc, self.sign(IDENTITY_DOMAIN, canonical(doc)))

    @classmethod
    async def load(cls, data_dir: Path, kv: KeyValueStore, *, shared: bool, name: str | None) -> ClusterIdentity:
        made = secrets.token_bytes(32).hex()
        if shared:
            result = await kv.compare_and_swap(CLUSTER_KEY, None, made.encode())
            found = made if result.succeeded else (await kv.get(CLUSTER_KEY)).value.decode()  # type: ignore[union-attr]
        else:
            found = write_once(data_dir / KEY_FILE, made + "\n")
        try:
            seed = bytes.fromhex(found.strip())
            if len(seed) != 32:
                raise ValueError
        except ValueError:
            raise AspenError(ErrorCode.INVALID_ARGUMENT, "the stored cluster key is not 64 hex characters") from None
        return cls(seed, name)
