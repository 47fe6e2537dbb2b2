"""``aspen lock | semaphore | election | counter | sequence | ratelimit …``:
the coordination primitives (``aspen queue``: :mod:`aspen.cli.queue`).
A lock, permit or candidacy taken here outlives the command: release it, or
let its TTL run out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from aspen.cli.common import (
    JsonOpt,
    UrlOpt,
    connect,
    print_json,
    reports_errors,
)
from aspen.coordination import requests as m

TtlOpt = Annotated[int, typer.Option("--ttl", help="Seconds it lasts unless renewed (1..3600).")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Seconds to wait (0..300).")]
TryOpt = Annotated[bool, typer.Option("--try", help="Do not wait: answer at once.")]
HolderOpt = Annotated[str, typer.Option("--holder", help="A label shown to others.")]


def send(url: str | None, json: bool, request: Any, text: Callable[[Any], str]) -> Any:
    """Send ``request``; print the result as JSON or as ``text(result)``."""
    with connect(url) as client:
        result = client.coord(request)
    print_json(result) if json else typer.echo(text(result))
    return result


def _until(ms: int) -> str:
    return f"until {ms}" if ms else ""


def _lock(lock: Any) -> str:
    return f"{lock.name} token {lock.token} held by {lock.holder or lock.owner or '-'} {_until(lock.deadline_ms)}"


# --- lock ---------------------------------------------------------------------

lock = typer.Typer(help="Locks with fencing tokens.", no_args_is_help=True)


@lock.command("acquire")
@reports_errors
def lock_acquire(
    name: str, ttl: TtlOpt = 30, timeout: TimeoutOpt = 10.0, holder: HolderOpt = "", try_: TryOpt = False,
    url: UrlOpt = None, json: JsonOpt = False,
) -> None:  # fmt: skip
    """Take lock NAME (waiting up to --timeout); prints the fencing token. Exit 1 when held."""
    if try_:
        r = send(url, json, m.LockTryAcquire(name=name, holder=holder, ttl_seconds=ttl),
                 lambda r: _lock(r.lock) if r.lock else f"{name} is busy")  # fmt: skip
        if not r.acquired:
            raise typer.Exit(1)
        return
    send(
        url,
        json,
        m.LockAcquire(name=name, holder=holder, ttl_seconds=ttl, timeout_seconds=timeout),
        lambda r: _lock(r.lock),
    )


@lock.command("release")
@reports_errors
def lock_release(name: str, token: int, url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Give up lock NAME held with TOKEN."""
    send(url, json, m.LockRelease(name=name, token=token), lambda r: f"released {r.name}")


@lock.command("renew")
@reports_errors
def lock_renew(name: str, token: int, url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Restart the TTL of lock NAME held with TOKEN."""
    send(url, json, m.LockRenew(name=name, token=token), lambda r: _lock(r.lock))


@lock.command("status")
@reports_errors
def lock_status(name: str, url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Who holds lock NAME."""
    send(url, json, m.LockStatus(name=name), lambda r: _lock(r.lock) if r.lock else f"{name} is free")


# --- rwlock ----------------------------------------------------------------------

rwlock = typer.Typer(help="Read-write locks (writer preference).", no_args_is_help=True)
WriteOpt = Annotated[bool, typer.Option("--write", help="The write (exclusive) side; default: read.")]


def _rw(r: Any) -> str:
    h = r.holding
    return f"{h.name} {h.mode} token {h.token}" if h else "busy"


@rwlock.command("acquire")
@reports_errors
def rwlock_acquire(
    name: str, write: WriteOpt = False, ttl: TtlOpt = 30, timeout: TimeoutOpt = 10.0, holder: HolderOpt = "",
    try_: TryOpt = False, url: UrlOpt = None, json: JsonOpt = False,
) -> None:  # fmt: skip
    """Take the read (or --write) side; prints the token. Exit 1 when --try finds it taken."""
    kind = {(False, False): m.RWLockAcquireRead, (True, False): m.RWLockAcquireWrite,
            (False, True): m.RWLockTryAcquireRead, (True, True): m.RWLockTryAcquireWrite}[(write, try_)]  # fmt: skip
    body = kind(name=name, holder=holder, ttl_seconds=ttl, **({} if try_ else {"timeout_seconds": timeout}))
    if not send(url, json, body, _rw).acquired:
        raise typer.Exit(1)


@rwlock.command("release")
@reports_errors
def rwlock_release(name: str, token: int, write: WriteOpt = False, url: UrlOpt = None, json: JsonOpt = False) -> None:
    body = (m.RWLockReleaseWrite if write else m.RWLockReleaseRead)(name=name, token=token)
    send(url, json, body, lambda r: f"released {r.name}")


@rwlock.command("downgrade")
@reports_errors
def rwlock_downgrade(name: str, token: int, url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Turn a write holding into a read one (same token)."""
    send(url, json, m.RWLockDowngrade(name=name, token=token), _rw)


@rwlock.command("status")
@reports_errors
def rwlock_status(name: str, url: UrlOpt = None, json: JsonOpt = False) -> None:
    send(url, json, m.RWLockStatus(name=name),
         lambda r: f"{name}: {r.rwlock.mode}, {len(r.rwlock.holders)} holding, {r.rwlock.pending_writers} writers waiting")  # fmt: skip


# --- semaphore ------------------------------------------------------------------

semaphore = typer.Typer(help="Counting semaphores.", no_args_is_help=True)


def _permit(p: Any) -> str:
    return f"{p.name} permit {p.permit_id} ({p.permits} permits) {_until(p.deadline_ms)}"


@semaphore.command("acquire")
@reports_errors
def semaphore_acquire(
    name: str, capacity: Annotated[int, typer.Option(help="Permits the semaphore has.")],
    permits: Annotated[int, typer.Option(help="Permits to take.")] = 1, ttl: TtlOpt = 30,
    timeout: TimeoutOpt = 10.0, holder: HolderOpt = "", try_: TryOpt = False, url: UrlOpt = None,
    json: JsonOpt = False,
) -> None:  # fmt: skip
    """Take permits of semaphore NAME; prints the permit id. Exit 1 when none are free."""
    if try_:
        body = m.SemaphoreTryAcquire(name=name, capacity=capacity, permits=permits, holder=holder, ttl_seconds=ttl)
        r = send(url, json, body, lambda r: _permit(r.permit) if r.permit else f"{name} is full")
        if not r.acquired:
            raise typer.Exit(1)
        return
    body = m.SemaphoreAcquire(
        name=name, capacity=capacity, permits=permits, holder=holder, ttl_seconds=ttl, timeout_seconds=timeout
    )
    send(url, json, body, lambda r: _permit(r.permit))


@semaphore.command("release")
@reports_errors
def semaphore_release(name: str, permit_id: int, url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Give back the permits of PERMIT_ID."""
    send(url, json, m.SemaphoreRelease(name=name, permit_id=permit_id), lambda r: f"released {r.permit_id}")


@semaphore.command("renew")
@reports_errors
def semaphore_renew(name: str, permit_id: int, url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Restart the TTL of PERMIT_ID."""
    send(
        url, json, m.SemaphoreRenew(name=name, permit_id=permit_id), lambda r: f"{r.permit_id} {_until(r.deadline_ms)}"
    )


@semaphore.command("status")
@reports_errors
def semaphore_status(name: str, url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Capacity, permits in use and holders of NAME."""
    send(url, json, m.SemaphoreStatus(name=name),
         lambda r: f"{name}: {r.semaphore.in_use}/{r.semaphore.capacity} in use by {len(r.semaphore.holders)} holders")  # fmt: skip


# --- election ---------------------------------------------------------------------

election = typer.Typer(help="Leader election.", no_args_is_help=True)


def _leader(leader: Any) -> str:
    return f"{leader.name} led by {leader.candidate or leader.owner or '-'} (lease {leader.lease_id}, token {leader.token})"


@election.command("campaign")
@reports_errors
def election_campaign(
    name: str, candidate: Annotated[str, typer.Option(help="This candidate's label.")] = "", ttl: TtlOpt = 15,
    timeout: TimeoutOpt = 10.0, url: UrlOpt = None, json: JsonOpt = False,
) -> None:  # fmt: skip
    """Stand for NAME and wait to lead; prints the lease to renew and resign with."""
    body = m.ElectionCampaign(name=name, candidate=candidate, ttl_seconds=ttl, timeout_seconds=timeout)
    send(url, json, body, lambda r: _leader(r.leader))


@election.command("renew")
@reports_errors
def election_renew(name: str, lease_id: int, url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Keep leading NAME."""
    send(url, json, m.ElectionRenew(name=name, lease_id=lease_id), lambda r: _leader(r.leader))


@election.command("resign")
@reports_errors
def election_resign(name: str, lease_id: int, url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Stop leading NAME."""
    send(url, json, m.ElectionResign(name=name, lease_id=lease_id), lambda r: f"resigned {r.name}")


@election.command("leader")
@reports_errors
def election_leader(name: str, url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Who leads NAME."""
    send(url, json, m.ElectionLeader(name=name), lambda r: _leader(r.leader) if r.leader else f"{name} has no leader")


# --- barrier -------------------------------------------------------------------------

barrier = typer.Typer(help="Double barriers: enter together, leave together.", no_args_is_help=True)


@barrier.command("enter")
@reports_errors
def barrier_enter(
    name: str, count: Annotated[int, typer.Option(help="Participants to wait for.")], ttl: TtlOpt = 60,
    timeout: TimeoutOpt = 10.0, url: UrlOpt = None, json: JsonOpt = False,
) -> None:  # fmt: skip
    """Wait until COUNT participants have entered; prints our participant id."""
    body = m.BarrierEnter(name=name, count=count, ttl_seconds=ttl, timeout_seconds=timeout)
    send(url, json, body, lambda r: str(r.barrier.participant_id))


@barrier.command("leave")
@reports_errors
def barrier_leave(
    name: str, participant_id: int, timeout: TimeoutOpt = 10.0, url: UrlOpt = None, json: JsonOpt = False
) -> None:
    """Leave, and wait until every participant has."""
    send(url, json, m.BarrierLeave(name=name, participant_id=participant_id, timeout_seconds=timeout), lambda r: "left")


@barrier.command("status")
@reports_errors
def barrier_status(name: str, url: UrlOpt = None, json: JsonOpt = False) -> None:
    send(url, json, m.BarrierStatus(name=name),
         lambda r: f"{name}: {r.barrier.participants} in, {'open' if r.barrier.is_ready else 'waiting'}")  # fmt: skip


# --- counter, sequence, ratelimit ----------------------------------------------------

counter = typer.Typer(help="Counters (unsigned; --signed for int64).", no_args_is_help=True)
SignedOpt = Annotated[bool, typer.Option("--signed", help="The signed counter of that name.")]


@counter.command("get")
@reports_errors
def counter_get(name: str, signed: SignedOpt = False, url: UrlOpt = None, json: JsonOpt = False) -> None:
    send(url, json, (m.SignedCounterGet if signed else m.CounterGet)(name=name), lambda r: str(r.value))


@counter.command("add")
@reports_errors
def counter_add(
    name: str, delta: Annotated[int, typer.Argument(help="May be negative.")] = 1, signed: SignedOpt = False,
    url: UrlOpt = None, json: JsonOpt = False,
) -> None:  # fmt: skip
    """Add DELTA; prints the new value."""
    send(url, json, (m.SignedCounterAdd if signed else m.CounterAdd)(name=name, delta=delta), lambda r: str(r.value))


@counter.command("set")
@reports_errors
def counter_set(name: str, value: int, url: UrlOpt = None, json: JsonOpt = False) -> None:
    send(url, json, m.CounterSet(name=name, value=value), lambda r: str(r.value))


@counter.command("cas")
@reports_errors
def counter_cas(name: str, expected: int, new: int, url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Set to NEW if the value is EXPECTED; exit 1 (printing the value) when it is not."""
    r = send(url, json, m.CounterCompareAndSet(name=name, expected=expected, new_value=new), lambda r: str(r.value))
    if not r.is_success:
        raise typer.Exit(1)


sequence = typer.Typer(help="Unique increasing numbers.", no_args_is_help=True)


@sequence.command("next")
@reports_errors
def sequence_next(name: str, url: UrlOpt = None, json: JsonOpt = False) -> None:
    send(url, json, m.SequenceNext(name=name), lambda r: str(r.value))


@sequence.command("reserve")
@reports_errors
def sequence_reserve(name: str, count: int, url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Reserve COUNT numbers; prints the first."""
    send(url, json, m.SequenceReserve(name=name, count=count), lambda r: str(r.value))


ratelimit = typer.Typer(help="Token-bucket rate limiters.", no_args_is_help=True)


@ratelimit.command("acquire")
@reports_errors
def ratelimit_acquire(
    name: str, capacity: Annotated[float, typer.Option(help="Bucket size.")],
    rate: Annotated[float, typer.Option(help="Tokens added per second.")],
    tokens: Annotated[float, typer.Option(help="Tokens to take.")] = 1.0, url: UrlOpt = None, json: JsonOpt = False,
) -> None:  # fmt: skip
    """Take tokens now; exit 1 (saying when to retry) when there are too few."""
    body = m.RateLimiterTryAcquire(name=name, capacity=capacity, refill_per_second=rate, tokens=tokens)
    r = send(url, json, body,
             lambda r: f"allowed, {r.remaining:g} left" if r.allowed else f"refused: retry in {r.retry_after_ms} ms")  # fmt: skip
    if not r.allowed:
        raise typer.Exit(1)
