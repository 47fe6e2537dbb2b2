"""A Wing–Gong / Lowe linearizability checker (the search Knossos does).

A history is a list of :class:`Op`: who (process), when it was invoked and
when it returned (``end = inf`` when the process was killed and the outcome
is unknown), what it was and what it answered. The checker looks for an
order of the operations that (1) respects real time — an operation that
returned before another was invoked comes first — and (2) replays on a
sequential model giving every answer that was observed. Operations with an
unknown outcome may take effect at any point after their invocation, or not
at all. The search memoises (set of operations linearized, model state), so
a history of a few dozen concurrent operations checks in well under a
second.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

INF = math.inf

# step(state, op) -> the states the op may lead to when it answers op.result (empty: impossible)
Step = Callable[[Hashable, "Op"], Iterable[Hashable]]


@dataclass(frozen=True)
class Op:
    process: int
    start: float
    end: float  # INF: no answer (the process died)
    kind: str
    arg: Any = None
    result: Any = None

    @property
    def unknown(self) -> bool:
        return self.end == INF


@dataclass
class Verdict:
    ok: bool
    explored: int
    order: list[Op] = field(default_factory=list)  # a witness linearization when ok
    stuck: list[Op] = field(default_factory=list)  # the longest prefix found when not

    def __bool__(self) -> bool:
        return self.ok


def check(history: list[Op], initial: Hashable, step: Step, *, budget: int = 2_000_000) -> Verdict:
    ops = sorted(history, key=lambda o: o.start)
    n = len(ops)
    required = sum(1 << i for i, o in enumerate(ops) if not o.unknown)
    seen: set[tuple[int, Hashable]] = set()
    best: list[int] = []
    explored = 0
    # iterative DFS: (done bitmask, state, order as index list)
    stack: list[tuple[int, Hashable, list[int]]] = [(0, initial, [])]
    while stack:
        done, state, order = stack.pop()
        if done & required == required:
            return Verdict(True, explored, [ops[i] for i in order])
        if (done, state) in seen:
            continue
        seen.add((done, state))
        explored += 1
        if explored > budget:
            raise RuntimeError(f"linearizability search exceeded {budget} states; make the history smaller")
        if len(order) > len(best):
            best = order
        # candidates: not done, and invoked before every not-done op's return (the minimal ones)
        horizon = min((ops[i].end for i in range(n) if not done >> i & 1), default=INF)
        for i in range(n):
            if done >> i & 1:
                continue
            op = ops[i]
            if op.start > horizon:
                break  # sorted by start: nobody later can go first
            for nxt in step(state, op):
                stack.append((done | 1 << i, nxt, [*order, i]))
    return Verdict(False, explored, stuck=[ops[i] for i in best])


# --- models ---------------------------------------------------------------------------


def counter_step(state: int, op: Op) -> Iterable[int]:
    """add(d) answers the new value; get answers the value."""
    if op.kind == "add":
        new = state + op.arg
        if op.unknown or op.result == new:
            yield new
    elif op.kind == "get" and (op.unknown or op.result == state):
        yield state


Killed = dict[int, float]  # process -> when it was SIGKILLed (its leases expire after that)


def expired(killed: Killed, process: int | None, op: Op) -> bool:
    """Can ``process``'s lease have run out by the time ``op`` takes effect?
    Only if it was killed before ``op`` returned."""
    return process is not None and process in killed and killed[process] < op.end


def lock_step(killed: Killed) -> Step:
    """State: (holder process or None, holder's token, highest token). acquire
    answers a token (fencing: higher than every earlier one) or "timeout";
    release answers True (it held) or False (LOCK_NOT_HELD). A killed
    holder's lock may expire once it is dead: a later acquire may take it."""

    def step(state: tuple, op: Op) -> Iterable[tuple]:
        holder, token, top = state
        free = holder is None or expired(killed, holder, op)
        if op.kind == "acquire":
            if op.result == "timeout":
                yield state
            elif op.unknown:
                yield state  # it never took effect
                if free:
                    yield (op.process, None, top)  # took it; its token is unknown
            elif free and op.result > top:
                yield (op.process, op.result, op.result)
        elif op.kind == "release":
            holds = holder == op.process and token == op.arg
            if op.unknown:
                yield state
                if holds:
                    yield (None, None, top)
            elif op.result is True and holds:
                yield (None, None, top)
            elif op.result is False and not holds:
                yield state

    return step


def semaphore_step(capacity: int, killed: Killed) -> Step:
    """State: sorted (process, permit) grants. acquire answers a permit id or
    None (full); release answers True or False (SEMAPHORE_NOT_HELD). The
    grants of a killed process may expire once it is dead."""

    def step(state: tuple, op: Op) -> Iterable[tuple]:
        if op.kind == "acquire":
            if op.result is None and not op.unknown:
                if len(state) >= capacity:
                    yield state
                return
            if op.unknown:
                yield state  # it never took effect
                if len(state) < capacity:
                    yield tuple(sorted((*state, (op.process, -1))))  # a grant nobody learnt of: it only expires
                return
            droppable = [g for g in state if expired(killed, g[0], op)]
            need = len(state) + 1 - capacity
            if need <= 0:
                yield tuple(sorted((*state, (op.process, op.result))))
                return
            for gone in combinations(droppable, need):
                kept = tuple(g for g in state if g not in gone)
                yield tuple(sorted((*kept, (op.process, op.result))))
        elif op.kind == "release":
            grant = (op.process, op.arg)
            if grant in state and (op.unknown or op.result is True):
                yield tuple(g for g in state if g != grant)
            if op.unknown or (op.result is False and grant not in state):
                yield state

    return step


def queue_step(killed: Killed, history: list[Op]) -> Step:
    """State: (enqueued not yet delivered, in flight as (item, process)).
    enqueue answers the new id; dequeue answers an id or None (empty); ack(id)
    answers True. An item in flight with a killed consumer may come back
    (its visibility ran out); one with a live consumer must not. An enqueue
    cut short by a kill may have added one of the items nobody else
    enqueued as far as the history knows."""
    known = {o.result for o in history if o.kind == "enqueue" and not o.unknown}
    orphans = {o.result for o in history if o.kind == "dequeue" and o.result is not None} - known

    def step(state: tuple, op: Op) -> Iterable[tuple]:
        ready, flight = state
        if op.kind == "enqueue":
            if op.unknown:
                yield state
                for item in orphans - set(ready) - {f[0] for f in flight}:
                    yield (tuple(sorted((*ready, item))), flight)
                return
            yield (tuple(sorted((*ready, op.result))), flight)
        elif op.kind == "dequeue":
            if op.unknown:
                yield state
                return
            if op.result is None:
                if not ready:  # items of killed consumers may still be invisible
                    yield state
                return
            if op.result in ready:
                yield (tuple(i for i in ready if i != op.result), tuple(sorted((*flight, (op.result, op.process)))))
            for f in flight:
                if f[0] == op.result and expired(killed, f[1], op):
                    yield (ready, tuple(sorted((*(g for g in flight if g != f), (op.result, op.process)))))
        elif op.kind == "ack":
            mine = (op.arg, op.process)
            if mine in flight:
                yield (ready, tuple(f for f in flight if f != mine))
            if op.unknown:
                yield state

    return step
