"""The cluster's trust store: the author keys whose signed plugins nodes run.

One KV key per author, ``__plugins:trust:{pubkey}``, so adding and removing
are single writes every node sees through the same watch as the manifests,
and a node checks the store again at every load — removing an author stops
their plugins from loading anywhere from then on.
"""

from __future__ import annotations

import asyncio

import msgspec

from aspen.clock import now_ms
from aspen.errors import AspenError, ErrorCode
from aspen.plugins.manifest import PluginManifest, PluginSignature
from aspen.plugins.signing import parse_public_key, verify_wasm
from aspen.plugins.store import TRUST_PREFIX
from aspen.storage.protocol import KeyValueStore

MAX_AUTHOR_NAME_BYTES = 128
MAX_AUTHORS = 1000


class TrustedAuthor(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pubkey: str  # 64 hex: Ed25519 public key
    name: str = ""
    added_at_ms: int = 0


class TrustStore:
    def __init__(self, kv: KeyValueStore) -> None:
        self.kv = kv

    async def add(self, pubkey: str, name: str = "") -> TrustedAuthor:
        """Trust ``pubkey``; adding a key already trusted keeps the first entry."""
        parse_public_key(pubkey)
        if len(name.encode()) > MAX_AUTHOR_NAME_BYTES:
            raise AspenError(ErrorCode.INVALID_ARGUMENT, f"author name exceeds {MAX_AUTHOR_NAME_BYTES} bytes")
        author = TrustedAuthor(pubkey=pubkey, name=name, added_at_ms=now_ms())
        result = await self.kv.compare_and_swap(TRUST_PREFIX + pubkey, None, msgspec.json.encode(author))
        if not result.succeeded and result.actual is not None:
            return msgspec.json.decode(result.actual.value, type=TrustedAuthor)
        return author

    async def remove(self, pubkey: str) -> None:
        parse_public_key(pubkey)
        if not await self.kv.delete(TRUST_PREFIX + pubkey):
            raise AspenError(ErrorCode.PLUGIN_AUTHOR_NOT_FOUND, f"author {pubkey} is not trusted", author=pubkey)

    async def list(self) -> list[TrustedAuthor]:
        page = await self.kv.scan(TRUST_PREFIX, limit=MAX_AUTHORS)
        authors = []
        for kv in page.entries:
            try:
                authors.append(msgspec.json.decode(kv.value, type=TrustedAuthor))
            except msgspec.DecodeError:
                continue  # a hand-written garbage entry trusts nobody
        return authors

    async def is_trusted(self, pubkey: str) -> bool:
        return await self.kv.get(TRUST_PREFIX + pubkey) is not None

    async def require(self, signature: PluginSignature, *, plugin: str = "") -> None:
        """``PLUGIN_AUTHOR_UNTRUSTED`` unless the signing key is in the store."""
        if not await self.is_trusted(signature.author_pubkey):
            raise AspenError(
                ErrorCode.PLUGIN_AUTHOR_UNTRUSTED,
                f"plugin '{plugin}' is signed by {signature.author_pubkey}, which this cluster does not trust "
                "(aspen plugin trust add)",
                plugin=plugin,
                author=signature.author_pubkey,
            )

    async def check_module(self, m: PluginManifest, wasm: bytes, *, allow_unsigned: bool) -> None:
        """The rule at install and at every load: a valid signature by a
        trusted author, unless this node allows unsigned plugins (a signature
        that is present must still be valid)."""
        if m.signature is None and allow_unsigned:
            return
        await asyncio.to_thread(verify_wasm, m.signature, wasm, plugin=m.name)
        assert m.signature is not None
        if not allow_unsigned:
            await self.require(m.signature, plugin=m.name)
