"""Federated resources: named sets of opaque objects (kept in the blob
store, so addressed and verified by BLAKE3) plus named heads pointing at
some of them. What the objects mean belongs to the app (the forge later);
federation only moves them, pull-based, between trusted clusters.

KV layout: ``__federation:resmeta:{name}`` (:class:`ResourceMeta`),
``__federation:res:{name}:head:{ref}`` → hash, ``…:obj:{hash}`` → size. Each object's blob is
pinned with the tag ``federation:{name}:{hash}``.
"""

from __future__ import annotations

import re

import msgspec
from blake3 import blake3

from aspen.clock import now_ms
from aspen.errors import AspenError, ErrorCode
from aspen.storage.protocol import BlobStore, KeyValueStore

RES_PREFIX = "__federation:res:"
META_PREFIX = "__federation:resmeta:"
MAX_OBJECT_BYTES = 16 << 20
MAX_PAGE = 1000
MAX_HEADS = 1000
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./-]{0,127}")
_HASH = re.compile(r"[0-9a-f]{64}")


class ResourceMeta(msgspec.Struct, frozen=True):
    name: str
    origin: str  # the cluster key that publishes it ("" for this cluster's own)
    public: bool = False  # any cluster that is not blocked may pull it (else trusted ones only)
    updated_at_ms: int = 0


def check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise AspenError(ErrorCode.INVALID_ARGUMENT, "a resource name is 1-64 of [A-Za-z0-9_.-]", field="name")
    return name


def check_ref(ref: object) -> str:
    if not isinstance(ref, str) or not _REF.fullmatch(ref):
        raise AspenError(ErrorCode.INVALID_ARGUMENT, "a head name is 1-128 of [A-Za-z0-9_./-]", field="ref")
    return ref


def check_hash(value: object) -> str:
    if not isinstance(value, str) or not _HASH.fullmatch(value):
        raise AspenError(ErrorCode.INVALID_HASH, "an object hash is 64 lowercase hex (BLAKE3)")
    return value


class ResourceStore:
    def __init__(self, kv: KeyValueStore, blobs: BlobStore) -> None:
        self.kv = kv
        self.blobs = blobs

    @staticmethod
    def _key(name: str, part: str) -> str:
        return f"{RES_PREFIX}{name}:{part}"

    async def meta(self, name: str) -> ResourceMeta | None:
        found = await self.kv.get(META_PREFIX + check_name(name))
        return msgspec.json.decode(found.value, type=ResourceMeta) if found else None

    async def ensure(self, name: str, origin: str, *, public: bool = False) -> ResourceMeta:
        """The resource's record; ``INVALID_STATE`` when it exists with another origin."""
        meta = await self.meta(name)
        if meta is not None and meta.origin != origin:
            raise AspenError(
                ErrorCode.INVALID_STATE, f"resource {name!r} here comes from {meta.origin[:16] or 'this cluster'}"
            )
        meta = ResourceMeta(name, origin, public if meta is None else meta.public, now_ms())
        await self.kv.put(META_PREFIX + name, msgspec.json.encode(meta))
        return meta

    async def add_object(self, name: str, data: bytes, expected: str | None = None) -> str:
        """Store one object; with ``expected``, refuse bytes whose BLAKE3 differs."""
        if len(data) > MAX_OBJECT_BYTES:
            raise AspenError(ErrorCode.BLOB_TOO_LARGE, f"an object is at most {MAX_OBJECT_BYTES} bytes")
        digest = blake3(data).hexdigest()
        if expected is not None and digest != expected:
            raise AspenError(ErrorCode.BLOB_CORRUPT, f"object {expected[:16]}… arrived with other bytes", hash=expected)
        await self.blobs.add_bytes(data)
        await self.blobs.protect(digest, f"federation:{name}:{digest}")
        await self.kv.put(self._key(name, f"obj:{digest}"), str(len(data)).encode())
        return digest

    async def set_heads(self, name: str, heads: dict[str, str]) -> None:
        if len(heads) > MAX_HEADS:
            raise AspenError(ErrorCode.INVALID_ARGUMENT, f"at most {MAX_HEADS} heads")
        for ref, digest in heads.items():
            check_ref(ref)
            if await self.kv.get(self._key(name, f"obj:{check_hash(digest)}")) is None:
                raise AspenError(ErrorCode.INVALID_ARGUMENT, f"head {ref!r} names an object the resource lacks")
        for ref, digest in heads.items():
            await self.kv.put(self._key(name, f"head:{ref}"), digest.encode())

    async def heads(self, name: str) -> dict[str, str]:
        page = await self.kv.scan(self._key(check_name(name), "head:"), limit=MAX_HEADS)
        cut = len(self._key(name, "head:"))
        return {e.key[cut:]: e.value.decode() for e in page.entries}

    async def objects(self, name: str, after: str = "", limit: int = MAX_PAGE) -> list[str]:
        """Object hashes in order, after ``after``, at most ``limit`` (≤ 1 000)."""
        prefix = self._key(check_name(name), "obj:")
        limit = max(1, min(limit, MAX_PAGE))
        page = await self.kv.scan(start=prefix + after, end=prefix[:-1] + ";", limit=limit + 1)  # ";" follows ":"
        hashes = [e.key[len(prefix) :] for e in page.entries]
        return [h for h in hashes if h > after][:limit]

    async def has(self, name: str, digest: str) -> bool:
        return await self.kv.get(self._key(name, f"obj:{digest}")) is not None

    async def get_object(self, name: str, digest: str) -> bytes:
        if not await self.has(check_name(name), check_hash(digest)):
            raise AspenError(ErrorCode.BLOB_NOT_FOUND, f"resource {name!r} has no object {digest[:16]}…")
        return await self.blobs.get_bytes(digest)

    async def names(self) -> list[ResourceMeta]:
        page = await self.kv.scan(META_PREFIX, limit=MAX_PAGE)
        return [msgspec.json.decode(e.value, type=ResourceMeta) for e in page.entries]
