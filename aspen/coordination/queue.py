"""Queues with visibility timeouts, acks, delivery attempts, a dead-letter
queue, deduplication and message groups.

Keys under ``__coord:queue:{name}``: the config itself; ``…:n`` the counts
(:class:`QueueCounts`, the write guard: every change of the item set
commits only against the counts it read, so the item limit holds and ids
are dense); ``…:i:{id:020}`` the items in id order; ``…:d:{id:020}`` the
DLQ; ``…:u:{dedup id}`` the dedup window, on a lease. A delivery is a
compare-and-swap of the item's record that makes it invisible until
``visible_at_ms`` with a fresh receipt, so two consumers never hold the same
item within its visibility; an item not acked in time becomes visible again
(at least once). Within a message group only the oldest item is delivered,
and none while one is in flight. Times are the wall clock of whoever runs
the call (the node, over RPC).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from urllib.parse import quote

import msgspec

from aspen import clock
from aspen.coordination.queue_model import (
    DEDUP_WINDOW_SECONDS,
    MAX_BATCH,
    MAX_DELAY_MS,
    MAX_DEQUEUE,
    Delivery,
    DlqReason,
    Item,
    QueueConfig,
    QueueCounts,
    QueueStatus,
    check_config,
    check_id,
    check_payload,
    check_range,
    check_visibility,
)
from aspen.coordination.space import (
    CAS_RETRIES,
    base_key,
    check_wait,
    conflict,
    revoke_quietly,
    wait_for,
)
from aspen.errors import AspenError, ErrorCode
from aspen.storage.protocol import KeyValueStore
from aspen.storage.records import Compare, DeleteOp, GetOp, KeyValue, PutOp, TxnOp

_enc = msgspec.msgpack.Encoder().encode
_item = msgspec.msgpack.Decoder(Item)
_counts = msgspec.msgpack.Decoder(QueueCounts)
_config = msgspec.msgpack.Decoder(QueueConfig)
PAGE = 256


def receipt_invalid(receipt: str) -> AspenError:
    return AspenError(
        ErrorCode.QUEUE_RECEIPT_INVALID,
        "the receipt no longer names a delivery (acked, expired or redelivered)",
        receipt=receipt,
    )


class Queues:
    def __init__(self, kv: KeyValueStore) -> None:
        self.kv = kv

    # --- keys and state ---------------------------------------------------------

    @staticmethod
    def _keys(name: str) -> tuple[str, str, str, str, str]:
        base = base_key("queue", name)
        return base, base + ":n", base + ":i:", base + ":d:", base + ":u:"

    async def _state(self, name: str, *, create: bool = False) -> tuple[QueueConfig, KeyValue | None, QueueCounts]:
        base, counts_key, *_ = self._keys(name)
        r = await self.kv.transaction([], [GetOp(base), GetOp(counts_key)])
        cfg, counts = r.results[0].kv, r.results[1].kv
        if cfg is None:
            if not create:
                raise AspenError(ErrorCode.QUEUE_NOT_FOUND, f"queue {name!r} does not exist", name=name)
            await self.create(name, exist_ok=True)
            return await self._state(name)
        return _config.decode(cfg.value), counts, (QueueCounts() if counts is None else _counts.decode(counts.value))

    def _guard(self, name: str, counts: KeyValue | None) -> Compare:
        return Compare(self._keys(name)[1], "mod_revision", "==", 0 if counts is None else counts.mod_revision)

    async def create(self, name: str, config: QueueConfig | None = None, *, exist_ok: bool = False) -> QueueConfig:
        config = check_config(config or QueueConfig())
        base = self._keys(name)[0]
        r = await self.kv.transaction(
            [Compare(base, "exists", "==", False)], [PutOp(base, _enc(config))], [GetOp(base)]
        )
        if r.succeeded:
            return config
        existing = _config.decode(r.results[0].kv.value)
        if exist_ok or existing == config:
            return existing
        raise AspenError(ErrorCode.QUEUE_EXISTS, f"queue {name!r} exists with another configuration", name=name)

    async def delete(self, name: str) -> bool:
        base = self._keys(name)[0]
        existed = await self.kv.get(base) is not None
        await self.kv.batch_write([DeleteOp(base), DeleteOp(base + ":", prefix=True)])
        return existed

    # --- enqueue ------------------------------------------------------------------

    async def enqueue(
        self, name: str, payload: bytes, *, group: str | None = None, dedup_id: str | None = None, delay_ms: int = 0
    ) -> int:
        """Add an item (auto-creating the queue); returns its id. Within the
        dedup window the same ``dedup_id`` returns the first item's id."""
        return (await self._enqueue(name, [(payload, group, dedup_id, delay_ms)]))[0]

    async def enqueue_batch(self, name: str, items: Sequence[tuple[bytes, str | None, str | None, int]]) -> list[int]:
        """All at once, in order; items with a dedup id one at a time."""
        if not 1 <= len(items) <= MAX_BATCH:
            raise AspenError(
                ErrorCode.QUEUE_BATCH_TOO_LARGE, f"a batch holds 1..{MAX_BATCH} items, got {len(items)}", max=MAX_BATCH
            )
        if any(dedup for _, _, dedup, _ in items):
            return [i for item in items for i in await self._enqueue(name, [item])]
        return await self._enqueue(name, items)

    async def _enqueue(self, name: str, items: Sequence[tuple[bytes, str | None, str | None, int]]) -> list[int]:
        checked = [
            (check_payload(p), check_id(g, "group id"), check_id(d, "dedup id"),
             check_range(delay, "delay_ms", 0, MAX_DELAY_MS, ErrorCode.INVALID_ARGUMENT))
            for p, g, d, delay in items
        ]  # fmt: skip
        _, counts_key, items_prefix, _, dedup_prefix = self._keys(name)
        dedup = checked[0][2] if len(checked) == 1 else None
        dedup_key = None if dedup is None else dedup_prefix + quote(dedup, safe="")
        lease_id = (await self.kv.lease_grant(DEDUP_WINDOW_SECONDS)).id if dedup_key else 0
        try:
            for _ in range(CAS_RETRIES):
                config, counts_kv, counts = await self._state(name, create=True)
                if counts.live + len(checked) > config.max_items:
                    raise AspenError(
                        ErrorCode.QUEUE_FULL, f"queue {name!r} holds {counts.live} of {config.max_items} items",
                        max=config.max_items, used=counts.live,
                    )  # fmt: skip
                now, ids, ops = clock.now_ms(), [], []
                for n, (payload, group, dd, delay) in enumerate(checked):
                    item = Item(id=counts.next_id + n, payload=payload, enqueued_ms=now, group=group, dedup_id=dd,
                                visible_at_ms=now + delay if delay else 0)  # fmt: skip
                    ids.append(item.id)
                    ops.append(PutOp(f"{items_prefix}{item.id:020d}", _enc(item)))
                n = len(checked)
                new_counts = msgspec.structs.replace(
                    counts, next_id=counts.next_id + n, live=counts.live + n, enqueued=counts.enqueued + n
                )
                ops.append(PutOp(counts_key, _enc(new_counts)))
                compares = [self._guard(name, counts_kv)]
                failure: list[TxnOp] = []
                if dedup_key:
                    compares.append(Compare(dedup_key, "exists", "==", False))
                    ops.append(PutOp(dedup_key, str(ids[0]).encode(), lease=lease_id))
                    failure.append(GetOp(dedup_key))
                r = await self.kv.transaction(compares, ops, failure)
                if r.succeeded:
                    lease_id = 0
                    return ids
                if dedup_key and r.failed_compare == 1 and r.results and r.results[0].kv is not None:
                    return [int(r.results[0].kv.value)]
            raise conflict(counts_key)
        finally:
            if lease_id:
                await revoke_quietly(self.kv, lease_id)

    # --- reading items --------------------------------------------------------------

    async def _items(self, prefix: str):
        token = None
        while True:
            page = await self.kv.scan(prefix, limit=PAGE, continuation=token)
            for kv in page.entries:
                yield kv, _item.decode(kv.value)
            if not page.is_truncated:
                return
            token = page.continuation_token

    # --- delivery -------------------------------------------------------------------

    async def dequeue(
        self, name: str, consumer: str = "", *, max_items: int = 1, visibility_timeout_ms: int | None = None
    ) -> list[Delivery]:
        """Claim up to ``max_items`` visible items for ``visibility_timeout_ms``."""
        got, _, _ = await self._dequeue(name, consumer, max_items, visibility_timeout_ms)
        return got

    async def _dequeue(
        self, name: str, consumer: str, max_items: int, visibility: int | None
    ) -> tuple[list[Delivery], int, int]:
        """(deliveries, the revision scanned from, the next time an item becomes visible; 0: none)."""
        check_range(max_items, "max_items", 1, MAX_DEQUEUE, ErrorCode.QUEUE_BATCH_TOO_LARGE)
        config, _, _ = await self._state(name)
        visibility = config.visibility_timeout_ms if visibility is None else check_visibility(visibility)
        revision = await self.kv.current_revision()
        _, _, items_prefix, _, _ = self._keys(name)
        now, out, blocked, next_visible = clock.now_ms(), [], set(), 0
        async for kv, item in self._items(items_prefix):
            if len(out) >= max_items:
                break
            if item.group is not None and item.group in blocked:
                continue
            if item.visible_at_ms > now:
                next_visible = item.visible_at_ms if not next_visible else min(next_visible, item.visible_at_ms)
                if item.group is not None:
                    blocked.add(item.group)
                continue
            limit = config.max_delivery_attempts
            if limit and item.attempts >= limit:
                await self._to_dlq(name, kv, item, "max_delivery_attempts", None)
                continue
            if item.group is not None:
                blocked.add(item.group)
            receipt = f"{item.id}:{os.urandom(8).hex()}"
            claimed = msgspec.structs.replace(
                item, attempts=item.attempts + 1, visible_at_ms=now + visibility, receipt=receipt, consumer=consumer
            )
            r = await self.kv.transaction(
                [Compare(kv.key, "mod_revision", "==", kv.mod_revision)], [PutOp(kv.key, _enc(claimed))]
            )
            if r.succeeded:
                out.append(Delivery(id=item.id, payload=item.payload, receipt=receipt, attempts=claimed.attempts,
                                    visible_at_ms=claimed.visible_at_ms, group=item.group))  # fmt: skip
        return out, revision, next_visible

    async def dequeue_wait(
        self, name: str, consumer: str = "", *, max_items: int = 1, visibility_timeout_ms: int | None = None,
        timeout: float = 10.0,
    ) -> list[Delivery]:  # fmt: skip
        """Like :meth:`dequeue`, waiting up to ``timeout`` seconds for an item:
        on a watch of the items (a new or returned item), or until the next
        item's visibility ends. Empty when nothing came."""
        timeout = check_wait(timeout)
        give_up = time.monotonic() + timeout
        _, _, items_prefix, _, _ = self._keys(name)
        while True:
            got, revision, next_visible = await self._dequeue(name, consumer, max_items, visibility_timeout_ms)
            left = give_up - time.monotonic()
            if got or left <= 0:
                return got
            if next_visible:
                left = min(left, max(0.0, (next_visible - clock.now_ms()) / 1000) + 0.001)
            await wait_for(self.kv, items_prefix, revision, left, lambda e: e.type == "put")

    async def _delivered(self, name: str, receipt: str) -> tuple[KeyValue, Item]:
        item_id, _, _ = receipt.partition(":") if isinstance(receipt, str) else ("", "", "")
        if not item_id.isdigit() or len(item_id) > 20:
            raise receipt_invalid(str(receipt))
        kv = await self.kv.get(f"{self._keys(name)[2]}{int(item_id):020d}")
        if kv is None:
            raise receipt_invalid(receipt)
        item = _item.decode(kv.value)
        if item.receipt != receipt or item.visible_at_ms <= clock.now_ms():
            raise receipt_invalid(receipt)
        return kv, item

    async def _remove(self, name: str, kv: KeyValue, extra: list[PutOp], update) -> bool:
        """Delete ``kv`` (and write ``extra``) against the item's and the counts' revisions."""
        counts_key = self._keys(name)[1]
        for _ in range(CAS_RETRIES):
            _, counts_kv, counts = await self._state(name)
            r = await self.kv.transaction(
                [Compare(kv.key, "mod_revision", "==", kv.mod_revision), self._guard(name, counts_kv)],
                [DeleteOp(kv.key), *extra, PutOp(counts_key, _enc(update(counts)))],
            )
            if r.succeeded:
                return True
            if r.failed_compare == 0:
                return False
        raise conflict(counts_key)

    async def ack(self, name: str, receipt: str) -> None:
        kv, _ = await self._delivered(name, receipt)
        if not await self._remove(
            name, kv, [], lambda c: msgspec.structs.replace(c, live=c.live - 1, acked=c.acked + 1)
        ):
            raise receipt_invalid(receipt)

    async def _to_dlq(self, name: str, kv: KeyValue, item: Item, reason: DlqReason, error: str | None) -> bool:
        dead = msgspec.structs.replace(
            item, receipt="", consumer="", visible_at_ms=0, dlq_reason=reason, last_error=error
        )
        put = PutOp(f"{self._keys(name)[3]}{item.id:020d}", _enc(dead))
        return await self._remove(
            name, kv, [put], lambda c: msgspec.structs.replace(c, live=c.live - 1, dead=c.dead + 1)
        )

    async def nack(
        self, name: str, receipt: str, *, to_dlq: bool = False, delay_ms: int = 0, error: str | None = None
    ) -> bool:
        """Give a delivery back: visible again after ``delay_ms``, or to the DLQ
        when asked or out of attempts. Returns whether it went to the DLQ."""
        delay_ms = check_range(delay_ms, "delay_ms", 0, MAX_DELAY_MS, ErrorCode.INVALID_ARGUMENT)
        if error is not None and (not isinstance(error, str) or len(error) > 4096):
            raise AspenError(ErrorCode.INVALID_ARGUMENT, "an error message is text of at most 4096 characters")
        kv, item = await self._delivered(name, receipt)
        config, _, _ = await self._state(name)
        limit = config.max_delivery_attempts
        if to_dlq or (limit and item.attempts >= limit):
            if not await self._to_dlq(name, kv, item, "rejected" if to_dlq else "max_delivery_attempts", error):
                raise receipt_invalid(receipt)
            return True
        back = msgspec.structs.replace(
            item, receipt="", consumer="", visible_at_ms=clock.now_ms() + delay_ms if delay_ms else 0, last_error=error
        )
        await self._swap(kv, back, receipt)
        return False

    async def _swap(self, kv: KeyValue, new: Item, receipt: str) -> None:
        r = await self.kv.transaction(
            [Compare(kv.key, "mod_revision", "==", kv.mod_revision)], [PutOp(kv.key, _enc(new))]
        )
        if not r.succeeded:
            raise receipt_invalid(receipt)

    async def extend(self, name: str, receipt: str, visibility_timeout_ms: int) -> int:
        """Keep a delivery invisible ``visibility_timeout_ms`` from now; returns the new deadline."""
        ms = check_visibility(visibility_timeout_ms)
        kv, item = await self._delivered(name, receipt)
        until = clock.now_ms() + ms
        await self._swap(kv, msgspec.structs.replace(item, visible_at_ms=until), receipt)
        return until

    # --- inspection and the DLQ ---------------------------------------------------------

    async def peek(self, name: str, max_items: int = 10) -> list[Item]:
        check_range(max_items, "max_items", 1, MAX_DEQUEUE, ErrorCode.QUEUE_BATCH_TOO_LARGE)
        await self._state(name)
        now, out = clock.now_ms(), []
        async for _, item in self._items(self._keys(name)[2]):
            if item.visible_at_ms <= now:
                out.append(item)
                if len(out) >= max_items:
                    break
        return out

    async def status(self, name: str) -> QueueStatus:
        config, _, counts = await self._state(name)
        now, visible = clock.now_ms(), 0
        async for _, item in self._items(self._keys(name)[2]):
            visible += item.visible_at_ms <= now
        return QueueStatus(name=name, config=config, visible=visible, in_flight=counts.live - visible, dlq=counts.dead,
                           enqueued=counts.enqueued, acked=counts.acked)  # fmt: skip

    async def dlq(self, name: str, max_items: int = 100) -> list[Item]:
        check_range(max_items, "max_items", 1, 1000, ErrorCode.QUEUE_BATCH_TOO_LARGE)
        await self._state(name)
        out = []
        async for _, item in self._items(self._keys(name)[3]):
            out.append(item)
            if len(out) >= max_items:
                break
        return out

    async def redrive(self, name: str, max_items: int = 100) -> int:
        """Move up to ``max_items`` DLQ items back, attempts reset; returns how many."""
        check_range(max_items, "max_items", 1, MAX_BATCH, ErrorCode.QUEUE_BATCH_TOO_LARGE)
        _, counts_key, items_prefix, _, _ = self._keys(name)
        dead = [(kv, item) async for kv, item in self._items(self._keys(name)[3])][:max_items]
        if not dead:
            await self._state(name)
            return 0
        for _ in range(CAS_RETRIES):
            config, counts_kv, counts = await self._state(name)
            room = config.max_items - counts.live
            if room <= 0:
                raise AspenError(
                    ErrorCode.QUEUE_FULL, f"queue {name!r} is full", max=config.max_items, used=counts.live
                )
            batch = dead[:room]
            ops: list[TxnOp] = []
            compares = [self._guard(name, counts_kv)]
            for kv, item in batch:
                compares.append(Compare(kv.key, "mod_revision", "==", kv.mod_revision))
                fresh = msgspec.structs.replace(item, attempts=0, dlq_reason=None, visible_at_ms=0)
                ops += [DeleteOp(kv.key), PutOp(f"{items_prefix}{item.id:020d}", _enc(fresh))]
            n = len(batch)
            ops.append(
                PutOp(counts_key, _enc(msgspec.structs.replace(counts, live=counts.live + n, dead=counts.dead - n)))
            )
            r = await self.kv.transaction(compares, ops)
            if r.succeeded:
                return n
            if r.failed_compare:  # a DLQ item moved meanwhile: read them again
                return await self.redrive(name, max_items)
        raise conflict(counts_key)
