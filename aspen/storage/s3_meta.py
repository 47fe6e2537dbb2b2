"""The S3 blob backend's state in the KV store, so every node agrees on it.

Layout (under the reserved ``__cluster:`` space)::

    __cluster:blobstore:blob:{hash}   BlobMeta: size, object, times, tags, corrupt flag
    __cluster:blobstore:seg:{hash}    the segment table (32 bytes per 256 KiB)
    __cluster:blobstore:tag:{tag}     the hash a tag protects
    __cluster:blobstore:gc            the GC lock, attached to the holder's lease
    __cluster:blobstore:usage         bytes of all records (the ``max_total_bytes`` quota)
    __cluster:blobstore:upload:{obj}  a multipart upload running (:mod:`aspen.storage.s3_running`)

A blob exists when its ``blob:`` record does and is not marked corrupt. Every change is
one transaction guarded by the mod revision of the records it read, so an add that
re-touches a blob, a tag that moves and GC removing an untagged blob cannot interleave
wrongly: whichever commits second sees a changed revision, re-reads and decides again.
A change that adds or removes a record moves the usage counter in the same transaction
(:func:`sized`), so the quota holds across every node at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from aspen.errors import AspenError, ErrorCode, quota_exceeded
from aspen.storage.protocol import KeyValueStore
from aspen.storage.records import Compare, DeleteOp, KeyValue, PutOp, TxnOp

PREFIX = "__cluster:blobstore:"
BLOB = PREFIX + "blob:"
SEG = PREFIX + "seg:"
TAG = PREFIX + "tag:"
GC_LOCK = PREFIX + "gc"
USAGE = PREFIX + "usage"


class BlobMeta(msgspec.Struct, frozen=True):
    size: int
    object: str  # object name under the store prefix
    created_at_ms: int
    touched_at_ms: int
    tags: list[str] = []
    corrupt: bool = False  # found damaged: never served again until a good copy is added


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(BlobMeta)


def encode(meta: BlobMeta) -> bytes:
    return _enc.encode(meta)


def decode(kv: KeyValue) -> BlobMeta:
    try:
        return _dec.decode(kv.value)
    except msgspec.DecodeError as exc:
        raise AspenError(ErrorCode.STORAGE_UNAVAILABLE, f"blob record {kv.key} is unreadable: {exc}") from None


@dataclass
class Loaded:
    """A record as read, with the revision a guarded write compares against."""

    hash: str
    meta: BlobMeta | None
    mod_revision: int  # 0 when absent

    @property
    def live(self) -> bool:
        return self.meta is not None and not self.meta.corrupt

    def guard(self) -> Compare:
        return Compare(key=BLOB + self.hash, target="mod_revision", op="==", value=self.mod_revision)


async def load(kv: KeyValueStore, h: str) -> Loaded:
    entry = await kv.get(BLOB + h)
    return Loaded(h, None if entry is None else decode(entry), 0 if entry is None else entry.mod_revision)


async def load_with_table(kv: KeyValueStore, h: str) -> tuple[Loaded, bytes]:
    """The record and its segment table in one KV round trip."""
    entry, table = await kv.batch_read([BLOB + h, SEG + h])
    loaded = Loaded(h, None if entry is None else decode(entry), 0 if entry is None else entry.mod_revision)
    return loaded, b"" if table is None else table.value


async def load_table(kv: KeyValueStore, h: str) -> bytes:
    entry = await kv.get(SEG + h)
    return b"" if entry is None else entry.value


async def guarded(kv: KeyValueStore, compares: list[Compare], ops: list[TxnOp]) -> bool:
    return (await kv.transaction(compares, ops)).succeeded


async def load_usage(kv: KeyValueStore) -> tuple[int, int]:
    """(bytes of all records, the counter's mod revision); a store whose counter does not
    exist yet (records from before it) is counted once, and the first change creates it."""
    entry = await kv.get(USAGE)
    if entry is not None:
        try:
            return int(entry.value), entry.mod_revision
        except ValueError:
            raise AspenError(ErrorCode.STORAGE_UNAVAILABLE, f"blob usage record {USAGE} is unreadable") from None
    total, after, more = 0, "", True
    while more:
        records, more = await scan_records(kv, after)
        total += sum(m.size for _, m, _ in records)
        after = records[-1][0] if records else after
    return total, 0


async def sized(
    kv: KeyValueStore, compares: list[Compare], ops: list[TxnOp], delta: int, limit: int | None = None
) -> bool:
    """:func:`guarded` that also moves the usage counter by ``delta`` bytes; ``QUOTA_EXCEEDED``
    when a growth would pass ``limit`` and ``compares`` still hold. A change that lost only
    the race on the counter (another node's add or delete) is retried."""
    while True:
        used, rev = await load_usage(kv)
        if limit is not None and delta > 0 and used + delta > limit:
            if not await guarded(kv, compares, []):
                return False  # the caller's view is stale: it re-reads and decides again
            raise quota_exceeded("max_total_bytes", limit, used)
        counter = Compare(key=USAGE, target="mod_revision", value=rev)
        put = PutOp(key=USAGE, value=str(max(0, used + delta)).encode())
        result = await kv.transaction([*compares, counter], [*ops, put])
        if result.succeeded:
            return True
        if result.failed_compare != len(compares):
            return False


def put_meta(h: str, meta: BlobMeta) -> PutOp:
    return PutOp(key=BLOB + h, value=encode(meta))


def drop_blob(h: str, tags: list[str] = ()) -> list[TxnOp]:
    """Ops that remove a blob's records (and, when given, the tag keys pointing at it)."""
    return [DeleteOp(key=BLOB + h), DeleteOp(key=SEG + h), *(DeleteOp(key=TAG + t) for t in tags)]


async def protect(kv: KeyValueStore, h: str, tag: str) -> None:
    """Point ``tag`` at ``h`` (moving it off the blob it protected before)."""
    while True:
        cur = await load(kv, h)
        if not cur.live:
            raise AspenError(ErrorCode.BLOB_NOT_FOUND, f"blob {h} not found", hash=h)
        tag_kv = await kv.get(TAG + tag)
        old_hash = None if tag_kv is None else tag_kv.value.decode()
        if old_hash == h and tag in cur.meta.tags:
            return
        compares = [
            cur.guard(),
            Compare(key=TAG + tag, target="mod_revision", value=0 if tag_kv is None else tag_kv.mod_revision),
        ]
        ops: list[TxnOp] = [
            put_meta(h, msgspec.structs.replace(cur.meta, tags=sorted({*cur.meta.tags, tag}))),
            PutOp(key=TAG + tag, value=h.encode()),
        ]
        if old_hash is not None and old_hash != h:
            old = await load(kv, old_hash)
            compares.append(old.guard())
            if old.meta is not None:
                ops.append(
                    put_meta(old_hash, msgspec.structs.replace(old.meta, tags=[t for t in old.meta.tags if t != tag]))
                )
        if await guarded(kv, compares, ops):
            return


async def unprotect(kv: KeyValueStore, tag: str) -> None:
    while True:
        tag_kv = await kv.get(TAG + tag)
        if tag_kv is None:
            return
        old = await load(kv, tag_kv.value.decode())
        compares = [Compare(key=TAG + tag, target="mod_revision", value=tag_kv.mod_revision), old.guard()]
        ops: list[TxnOp] = [DeleteOp(key=TAG + tag)]
        if old.meta is not None:
            ops.append(
                put_meta(old.hash, msgspec.structs.replace(old.meta, tags=[t for t in old.meta.tags if t != tag]))
            )
        if await guarded(kv, compares, ops):
            return


async def mark_corrupt(kv: KeyValueStore, h: str, object_name: str) -> None:
    """Flag the record (tags stay, so a good copy added later is protected again) unless a
    different object already replaced the damaged one."""
    while True:
        cur = await load(kv, h)
        if cur.meta is None or cur.meta.corrupt or cur.meta.object != object_name:
            return
        if await guarded(kv, [cur.guard()], [put_meta(h, msgspec.structs.replace(cur.meta, corrupt=True))]):
            return


async def scan_records(
    kv: KeyValueStore, after: str = "", limit: int = 1000
) -> tuple[list[tuple[str, BlobMeta, int]], bool]:
    """Up to ``limit`` records with hash > ``after`` in hash order: (hash, meta, mod revision), and whether more follow."""
    page = await kv.scan(
        start=BLOB + after + ("\0" if after else ""), end=BLOB[:-1] + chr(ord(BLOB[-1]) + 1), limit=limit
    )
    return [(e.key[len(BLOB) :], decode(e), e.mod_revision) for e in page.entries], page.is_truncated
