"""The ``__coord:`` key space, names, limits and the shared helpers of the
primitives (ownership records, waiting on a watch).

A primitive's keys are ``__coord:{kind}:{quoted name}`` and suffixes of it;
the name is percent-quoted so a ``:`` in a name can never reach another
primitive's keys."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from urllib.parse import quote

import msgspec

from aspen.errors import AspenError, ErrorCode
from aspen.storage.protocol import KeyValueStore
from aspen.storage.records import WatchEvent

PREFIX = "__coord:"
MAX_NAME_BYTES = 256
MAX_TTL_SECONDS = 3600  # a lock, permit or candidacy lives at most an hour without renewal
MAX_WAIT_SECONDS = 300.0  # a blocking call waits at most five minutes
CAS_RETRIES = 1000  # then COORD_CONFLICT; 16 writers lose 100 in a row one time in ~600


def check_name(name: object, what: str = "name") -> str:
    if not isinstance(name, str) or not name:
        raise AspenError(ErrorCode.COORD_NAME_INVALID, f"a {what} is a non-empty string")
    raw = name.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_NAME_BYTES:
        raise AspenError(
            ErrorCode.COORD_NAME_INVALID,
            f"a {what} is at most {MAX_NAME_BYTES} bytes, got {len(raw)}",
            max=MAX_NAME_BYTES,
        )
    if any(ord(ch) < 0x20 or 0xD800 <= ord(ch) <= 0xDFFF for ch in name):
        raise AspenError(ErrorCode.COORD_NAME_INVALID, f"a {what} has no control characters or lone surrogates")
    return name


def base_key(kind: str, name: str) -> str:
    return f"{PREFIX}{kind}:{quote(check_name(name), safe='')}"


def check_ttl(ttl: object, *, limit: int = MAX_TTL_SECONDS) -> int:
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= limit:
        raise AspenError(ErrorCode.COORD_TTL_OUT_OF_RANGE, f"ttl must be 1..{limit} seconds, got {ttl!r}", max=limit)
    return ttl


def check_wait(timeout: object, *, limit: float = MAX_WAIT_SECONDS) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 <= timeout <= limit:
        raise AspenError(
            ErrorCode.COORD_WAIT_OUT_OF_RANGE, f"timeout must be 0..{limit} seconds, got {timeout!r}", max=limit
        )
    return float(timeout)


def wait_timeout(name: str, timeout: float) -> AspenError:
    return AspenError(ErrorCode.COORD_WAIT_TIMEOUT, f"{name!r} was not obtained within {timeout:g}s", timeout=timeout)


def conflict(key: str) -> AspenError:
    return AspenError(ErrorCode.COORD_CONFLICT, f"{key!r} changed {CAS_RETRIES} times in a row; try again", key=key)


class Holder(msgspec.Struct, frozen=True, omit_defaults=True):
    """Who holds a lock, a permit or a candidacy: the authenticated caller
    (``owner``; "" in-process) and the label it chose."""

    owner: str
    label: str = ""
    permits: int = 0
    ttl: int = 0


encode = msgspec.msgpack.Encoder().encode
_holder = msgspec.msgpack.Decoder(Holder)


def decode_holder(raw: bytes) -> Holder:
    return _holder.decode(raw)


async def wait_for(
    kv: KeyValueStore, prefix: str, after_revision: int, timeout: float, wanted: Callable[[WatchEvent], bool]
) -> bool:
    """Block on a watch of ``prefix`` from ``after_revision + 1`` (so nothing
    that happened since the caller's read is missed) until an event passes
    ``wanted``: True, or False once ``timeout`` seconds pass. No polling."""
    if timeout <= 0:
        return False
    events = kv.watch(prefix, start_revision=after_revision + 1)
    try:
        async with asyncio.timeout(timeout):
            async for event in events:
                if wanted(event):
                    return True
    except TimeoutError:
        return False
    finally:
        await events.aclose()
    return False


def is_delete(event: WatchEvent) -> bool:
    return event.type == "delete"


def check_label(label: object, what: str = "holder") -> str:
    """A holder, candidate or consumer label: "" or a name."""
    return "" if label == "" else check_name(label, what)


async def revoke_quietly(kv: KeyValueStore, lease_id: int) -> None:
    """Drop a lease that holds nothing (anymore); gone already is fine."""
    try:
        await kv.lease_revoke(lease_id)
    except AspenError as exc:
        if exc.code != ErrorCode.LEASE_NOT_FOUND:
            raise
