"""Plugin timers as stored: one record per plugin, ``__plugins:timers:{plugin}``,
holding all of its timers by name (docs/plugin-abi.md §3, "Timers").

One record per plugin, every change a compare-and-swap of the bytes read,
so the limit of :data:`MAX_TIMERS` holds even when host calls on several
nodes race, and removing a plugin is one delete. Timers are keyed by the
plugin's name, not its version: an upgraded plugin keeps them. ``next_fire_ms``
is wall-clock time, so whichever node leads the timer duty
(:mod:`aspen.plugins.timer_duty`) reads the same schedule.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec

from aspen.clock import now_ms
from aspen.errors import AspenError, ErrorCode
from aspen.plugins.store import PLUGINS_PREFIX
from aspen.storage.protocol import KeyValueStore

TIMERS_PREFIX = PLUGINS_PREFIX + "timers:"
MAX_TIMERS = 16  # live timers per plugin; a fired one-shot is gone and no longer counts
MIN_INTERVAL_MS = 1000
MAX_INTERVAL_MS = 86_400_000  # 24 h
MAX_TIMER_NAME_BYTES = 64
_TIMER_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
CAS_ATTEMPTS = 64


class Timer(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    interval_ms: int
    repeating: bool
    next_fire_ms: int
    seq: int  # which scheduling this is: a fire whose timer was replaced meanwhile leaves the new one alone


class TimerSet(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    timers: dict[str, Timer] = {}
    seq: int = 0  # the last ``Timer.seq`` handed out


def timers_key(plugin: str) -> str:
    return TIMERS_PREFIX + plugin


def _invalid(field: str, message: str) -> AspenError:
    return AspenError(ErrorCode.PLUGIN_TIMER_INVALID, message, field=field)


def check_name(name: object) -> str:
    if not isinstance(name, str) or not _TIMER_NAME.fullmatch(name):
        raise _invalid("name", f"a timer name is 1-{MAX_TIMER_NAME_BYTES} bytes of [A-Za-z0-9._-]")
    return name


def check_interval(interval: object) -> int:
    """Out of range is an error, never silently clamped."""
    if (
        not isinstance(interval, int)
        or isinstance(interval, bool)
        or not MIN_INTERVAL_MS <= interval <= MAX_INTERVAL_MS
    ):
        raise _invalid("interval_ms", f"interval_ms is an integer in {MIN_INTERVAL_MS}..{MAX_INTERVAL_MS}")
    return interval


def check_repeating(value: object) -> bool:
    if not isinstance(value, bool):
        raise _invalid("repeating", "repeating must be true or false")
    return value


def timer_json(name: str, t: Timer) -> dict[str, Any]:
    return {"name": name, "interval_ms": t.interval_ms, "repeating": t.repeating, "next_fire_ms": t.next_fire_ms}


def decode_timers(raw: bytes) -> TimerSet:
    try:
        return msgspec.json.decode(raw, type=TimerSet)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return TimerSet()  # an unreadable record is replaced by the next change, never a crash


Change = Callable[[TimerSet], TimerSet | None]  # None: leave the record as it is


async def update(kv: KeyValueStore, plugin: str, change: Change) -> TimerSet:
    """Apply ``change`` to the plugin's record with compare-and-swap, retrying
    when another node changed it meanwhile; returns the record after."""
    key = timers_key(plugin)
    for _ in range(CAS_ATTEMPTS):
        current = await kv.get(key)
        before = TimerSet() if current is None else decode_timers(current.value)
        after = change(before)
        if after is None:
            return before
        if not after.timers:
            if current is None or (await kv.compare_and_delete(key, current.value)).succeeded:
                return after
            continue
        result = await kv.compare_and_swap(key, None if current is None else current.value, msgspec.json.encode(after))
        if result.succeeded:
            return after
    raise AspenError(ErrorCode.UNAVAILABLE, f"plugin '{plugin}': too much contention on its timers; retry")


async def schedule(kv: KeyValueStore, plugin: str, name: str, interval_ms: int, repeating: bool) -> Timer:
    """Add or replace timer ``name``: it first fires one interval from now."""

    def change(ts: TimerSet) -> TimerSet:
        if name not in ts.timers and len(ts.timers) >= MAX_TIMERS:
            raise AspenError(
                ErrorCode.PLUGIN_TOO_MANY_TIMERS,
                f"plugin '{plugin}' has {len(ts.timers)} timers, at most {MAX_TIMERS}; cancel one or reuse a name",
                plugin=plugin,
                max=MAX_TIMERS,
            )
        timer = Timer(interval_ms, repeating, now_ms() + interval_ms, ts.seq + 1)
        return TimerSet({**ts.timers, name: timer}, timer.seq)

    return (await update(kv, plugin, change)).timers[name]


async def cancel(kv: KeyValueStore, plugin: str, name: str) -> bool:
    found = False

    def change(ts: TimerSet) -> TimerSet | None:
        nonlocal found
        found = name in ts.timers
        return TimerSet({n: t for n, t in ts.timers.items() if n != name}, ts.seq) if found else None

    await update(kv, plugin, change)
    return found


async def fired(kv: KeyValueStore, plugin: str, name: str, timer: Timer) -> None:
    """After ``timer``'s callback ended: a one-shot is gone, a repeating one
    fires again one interval from now — unless the plugin replaced or
    cancelled it meanwhile (from the callback itself, perhaps)."""

    def change(ts: TimerSet) -> TimerSet | None:
        if ts.timers.get(name) != timer:
            return None
        rest = {n: t for n, t in ts.timers.items() if n != name}
        if timer.repeating:
            rest[name] = msgspec.structs.replace(timer, next_fire_ms=now_ms() + timer.interval_ms)
        return TimerSet(rest, ts.seq)

    await update(kv, plugin, change)


async def listed(kv: KeyValueStore, plugin: str) -> TimerSet:
    current = await kv.get(timers_key(plugin))
    return TimerSet() if current is None else decode_timers(current.value)


async def forget(kv: KeyValueStore, plugin: str) -> None:
    """A removed plugin's timers go with it."""
    await kv.delete(timers_key(plugin))
