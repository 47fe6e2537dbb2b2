"""``aspen queue …``: queues with visibility timeouts, acks and a DLQ."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from aspen.cli.common import JsonOpt, UrlOpt, reports_errors, show_bytes
from aspen.cli.coord import send
from aspen.coordination import requests as m

app = typer.Typer(help="Queues: enqueue, dequeue, ack/nack, the dead-letter queue.", no_args_is_help=True)
MaxOpt = Annotated[int, typer.Option("--max", help="At most this many items.")]


def _payload(value: str) -> bytes:
    return sys.stdin.buffer.read() if value == "-" else value.encode()


@app.command()
@reports_errors
def create(
    name: str, visibility_ms: Annotated[int, typer.Option(help="Default visibility timeout.")] = 30_000,
    max_attempts: Annotated[int, typer.Option(help="Deliveries before the DLQ (0: unlimited).")] = 3,
    max_items: Annotated[int, typer.Option(help="Items the queue may hold.")] = 100_000,
    url: UrlOpt = None, json: JsonOpt = False,
) -> None:  # fmt: skip
    body = m.QueueCreate(
        name=name, visibility_timeout_ms=visibility_ms, max_delivery_attempts=max_attempts, max_items=max_items
    )
    send(url, json, body, lambda r: f"created {r.name}")


@app.command()
@reports_errors
def delete(name: str, url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Delete queue NAME with its items and DLQ."""
    send(
        url,
        json,
        m.QueueDelete(name=name),
        lambda r: f"deleted {r.name}" if r.was_deleted else f"{r.name}: no such queue",
    )


@app.command()
@reports_errors
def enqueue(
    name: str, payload: Annotated[str, typer.Argument(help="The payload; - reads stdin.")],
    group: Annotated[str | None, typer.Option(help="Message group (delivered in order, one at a time).")] = None,
    dedup: Annotated[str | None, typer.Option(help="Deduplication id (5-minute window).")] = None,
    delay_ms: Annotated[int, typer.Option(help="Invisible for this long first.")] = 0,
    url: UrlOpt = None, json: JsonOpt = False,
) -> None:  # fmt: skip
    """Add an item; prints its id."""
    body = m.QueueEnqueue(name=name, payload=_payload(payload), group_id=group, dedup_id=dedup, delay_ms=delay_ms)
    send(url, json, body, lambda r: str(r.item_id))


@app.command()
@reports_errors
def dequeue(
    name: str, max_: MaxOpt = 1, visibility_ms: Annotated[int | None, typer.Option(help="Visibility timeout.")] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for an item (0: answer at once).")] = 0.0,
    consumer: Annotated[str, typer.Option(help="This consumer's label.")] = "", url: UrlOpt = None, json: JsonOpt = False,
) -> None:  # fmt: skip
    """Receive items: prints RECEIPT<TAB>PAYLOAD per item. Exit 1 when none came."""
    common = {"name": name, "consumer": consumer, "max_items": max_, "visibility_timeout_ms": visibility_ms}
    body = m.QueueDequeueWait(**common, timeout_seconds=wait) if wait else m.QueueDequeue(**common)
    r = send(url, json, body, lambda r: "\n".join(f"{d.receipt}\t{show_bytes(d.payload)}" for d in r.items))
    if not r.items:
        raise typer.Exit(1)


@app.command()
@reports_errors
def ack(name: str, receipt: str, url: UrlOpt = None, json: JsonOpt = False) -> None:
    send(url, json, m.QueueAck(name=name, receipt=receipt), lambda r: "acked")


@app.command()
@reports_errors
def nack(
    name: str, receipt: str, dlq: Annotated[bool, typer.Option("--dlq", help="Straight to the DLQ.")] = False,
    delay_ms: Annotated[int, typer.Option(help="Redeliver after this long.")] = 0,
    error: Annotated[str | None, typer.Option(help="Why (kept with the item).")] = None,
    url: UrlOpt = None, json: JsonOpt = False,
) -> None:  # fmt: skip
    body = m.QueueNack(name=name, receipt=receipt, to_dlq=dlq, delay_ms=delay_ms, error=error)
    send(url, json, body, lambda r: "moved to the DLQ" if r.moved_to_dlq else "returned")


@app.command()
@reports_errors
def extend(name: str, receipt: str, visibility_ms: int, url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Keep a delivery invisible VISIBILITY_MS from now."""
    send(url, json, m.QueueExtendVisibility(name=name, receipt=receipt, visibility_timeout_ms=visibility_ms),
         lambda r: f"invisible until {r.visible_at_ms}")  # fmt: skip


@app.command()
@reports_errors
def status(name: str, url: UrlOpt = None, json: JsonOpt = False) -> None:
    send(url, json, m.QueueStatus(name=name),
         lambda r: f"{name}: {r.status.visible} visible, {r.status.in_flight} in flight, {r.status.dlq} in the DLQ")  # fmt: skip


@app.command()
@reports_errors
def peek(name: str, max_: MaxOpt = 10, url: UrlOpt = None, json: JsonOpt = False) -> None:
    send(url, json, m.QueuePeek(name=name, max_items=max_),
         lambda r: "\n".join(f"{i.id}\t{show_bytes(i.payload)}" for i in r.items))  # fmt: skip


@app.command()
@reports_errors
def dlq(name: str, max_: MaxOpt = 100, url: UrlOpt = None, json: JsonOpt = False) -> None:
    """The dead-letter queue: ID<TAB>REASON<TAB>PAYLOAD."""
    send(url, json, m.QueueGetDLQ(name=name, max_items=max_),
         lambda r: "\n".join(f"{i.id}\t{i.dlq_reason}\t{show_bytes(i.payload)}" for i in r.items))  # fmt: skip


@app.command()
@reports_errors
def redrive(name: str, max_: MaxOpt = 100, url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Move DLQ items back into the queue."""
    send(url, json, m.QueueRedriveDLQ(name=name, max_items=max_), lambda r: f"redrove {r.redriven}")
