"""The records and limits of :mod:`aspen.coordination.queue`."""

from __future__ import annotations

from typing import Literal

import msgspec

from aspen.errors import AspenError, ErrorCode

MAX_PAYLOAD_BYTES = 1 << 19  # 512 KiB: the item record around it stays under the 1 MiB value limit
MAX_BATCH = 100
MAX_DEQUEUE = 100
MAX_VISIBILITY_MS = 12 * 3600 * 1000
MAX_DELAY_MS = 12 * 3600 * 1000
MAX_ATTEMPTS = 1000
MAX_ITEMS = 1_000_000
MAX_ID_BYTES = 128  # group and dedup ids
DEFAULT_VISIBILITY_MS = 30_000
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_MAX_ITEMS = 100_000
DEDUP_WINDOW_SECONDS = 300

DlqReason = Literal["max_delivery_attempts", "rejected"]


class QueueConfig(msgspec.Struct, frozen=True, kw_only=True):
    visibility_timeout_ms: int = DEFAULT_VISIBILITY_MS
    max_delivery_attempts: int = DEFAULT_MAX_ATTEMPTS  # 0: unlimited
    max_items: int = DEFAULT_MAX_ITEMS


class QueueCounts(msgspec.Struct, frozen=True):
    """The queue's write-guard: every change of the item set moves it."""

    next_id: int = 1
    live: int = 0  # items in the queue, visible or in flight (not the DLQ)
    dead: int = 0  # items in the DLQ
    enqueued: int = 0
    acked: int = 0


class Item(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    payload: bytes
    enqueued_ms: int
    attempts: int = 0  # deliveries so far
    visible_at_ms: int = 0  # invisible until then (in flight, or a nack's delay)
    receipt: str = ""  # of the current delivery
    consumer: str = ""
    group: str | None = None
    dedup_id: str | None = None
    dlq_reason: DlqReason | None = None
    last_error: str | None = None


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    payload: bytes
    receipt: str  # ack, nack and extend name it
    attempts: int  # this delivery included
    visible_at_ms: int  # redelivered after this unless acked or extended
    group: str | None = None


class QueueStatus(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    config: QueueConfig
    visible: int
    in_flight: int  # delivered, not yet acked, within visibility (or delayed by a nack)
    dlq: int
    enqueued: int
    acked: int


def check_range(value: object, what: str, low: int, high: int, code: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise AspenError(code, f"{what} must be {low}..{high}, got {value!r}", min=low, max=high)
    return value


def check_config(config: QueueConfig) -> QueueConfig:
    bad = ErrorCode.QUEUE_CONFIG_INVALID
    check_range(config.visibility_timeout_ms, "visibility_timeout_ms", 1, MAX_VISIBILITY_MS, bad)
    check_range(config.max_delivery_attempts, "max_delivery_attempts", 0, MAX_ATTEMPTS, bad)
    check_range(config.max_items, "max_items", 1, MAX_ITEMS, bad)
    return config


def check_visibility(ms: object) -> int:
    return check_range(ms, "visibility_timeout_ms", 1, MAX_VISIBILITY_MS, ErrorCode.QUEUE_VISIBILITY_OUT_OF_RANGE)


def check_payload(payload: object) -> bytes:
    if not isinstance(payload, (bytes, bytearray)):
        raise AspenError(ErrorCode.INVALID_ARGUMENT, "a payload is bytes")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise AspenError(
            ErrorCode.QUEUE_PAYLOAD_TOO_LARGE,
            f"payload is {len(payload)} bytes, the limit is {MAX_PAYLOAD_BYTES}",
            size=len(payload),
            max=MAX_PAYLOAD_BYTES,
        )
    return bytes(payload)


def check_id(value: object, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"a {what} is 1..{MAX_ID_BYTES} bytes of text", max=MAX_ID_BYTES)
    return value
