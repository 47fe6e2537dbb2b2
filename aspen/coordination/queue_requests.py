"""The queue requests of the coordination catalog (:mod:`aspen.coordination.requests`)."""

from __future__ import annotations

from aspen.coordination.queue_model import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_ITEMS,
    DEFAULT_VISIBILITY_MS,
    Delivery,
    Item,
    QueueConfig,
)
from aspen.coordination.queue_model import QueueStatus as QueueState
from aspen.rpc.catalog import Body


class Named(Body):
    """Base of every coordination request: it names its primitive."""

    name: str


# --- queues -----------------------------------------------------------------------


class QueueCreate(Named):
    visibility_timeout_ms: int = DEFAULT_VISIBILITY_MS
    max_delivery_attempts: int = DEFAULT_MAX_ATTEMPTS  # 0: unlimited
    max_items: int = DEFAULT_MAX_ITEMS


class QueueDelete(Named):
    pass


class QueueEnqueueItem(Body):
    payload: bytes
    group_id: str | None = None  # items of one group are delivered one at a time, in order
    dedup_id: str | None = None  # the same id within five minutes enqueues nothing new
    delay_ms: int = 0


class QueueEnqueue(QueueEnqueueItem, kw_only=True):
    name: str


class QueueEnqueueBatch(Named):
    items: list[QueueEnqueueItem]


class QueueDequeue(Named):
    consumer: str = ""
    max_items: int = 1
    visibility_timeout_ms: int | None = None  # None: the queue's


class QueueDequeueWait(QueueDequeue):
    timeout_seconds: float = 10.0


class QueuePeek(Named):
    max_items: int = 10


class QueueAck(Named):
    receipt: str


class QueueNack(Named):
    receipt: str
    to_dlq: bool = False
    delay_ms: int = 0
    error: str | None = None


class QueueExtendVisibility(Named):
    receipt: str
    visibility_timeout_ms: int


class QueueStatus(Named):
    pass


class QueueGetDLQ(Named):
    max_items: int = 100


class QueueRedriveDLQ(Named):
    max_items: int = 100


class QueueCreateResult(Body):
    name: str
    config: QueueConfig


class QueueDeleteResult(Body):
    name: str
    was_deleted: bool


class QueueEnqueueResult(Body):
    item_id: int


class QueueEnqueueBatchResult(Body):
    item_ids: list[int]


class QueueDequeueResult(Body):
    items: list[Delivery]


class QueueItemsResult(Body):
    items: list[Item]


class QueueAckResult(Body):
    receipt: str


class QueueNackResult(Body):
    moved_to_dlq: bool


class QueueExtendVisibilityResult(Body):
    visible_at_ms: int


class QueueStatusResult(Body):
    status: QueueState


class QueueRedriveDLQResult(Body):
    redriven: int
