"""Bounds on nesting depth, checked before anything recurses over a value.

Decoders, encoders and handlers recurse once per level of nesting; at about
a thousand levels Python raises ``RecursionError`` (an HTTP 500 and a long
traceback per call), and a hostile client can send that in a few kilobytes.

Both checks are nearly free on ordinary messages: a value cannot nest deeper
than the number of containers it holds, so nothing is scanned unless the
message has more opening brackets (JSON) or container headers (msgpack) than
``max_depth``. Past that, the work runs in C, never a Python loop per byte:
JSON goes through one regular expression that follows brackets only
``max_depth`` levels down (possessive, so it never backtracks: linear time,
a few ms for 4 MiB nested too deep, about 70 ms for 4 MiB of ``{}`` that
must be followed to the end, as long as decoding it takes); decoded msgpack
is walked one level at a time with C iterators.
"""

from __future__ import annotations

import functools
import itertools
import operator
import re
from typing import Any

from aspen.errors import AspenError, ErrorCode

MAX_DEPTH = 64
_MAX_SUPPORTED_DEPTH = 200  # the regex nests one group per level; ``re`` compiles it recursively

# msgpack container headers: fixmap, fixarray, array 16/32, map 16/32
_MSGPACK_CONTAINER_HEADERS = bytes([*range(0x80, 0xA0), 0xDC, 0xDD, 0xDE, 0xDF])
_CONTAINERS = frozenset({dict, list, tuple})


def too_deep(what: str, max_depth: int, code: str = ErrorCode.VALIDATION_ERROR) -> AspenError:
    """The one refusal for nesting, whichever check (or decoder) found it."""
    return AspenError(
        code, f"{what} nested at least {max_depth + 1} levels deep; the limit is {max_depth}", max_depth=max_depth
    )


@functools.lru_cache(maxsize=8)
def _json_within(max_depth: int) -> re.Pattern[bytes]:
    """Matches JSON-ish text whose brackets balance, strings skipped. Level
    k is a run of plain text, strings and level k-1 groups in brackets; an
    opener met at the deepest level sets group ``deep`` and takes the rest
    of the text, and then no level needs its closer, so too-deep text still
    matches (quickly) and says so. No match: malformed (an unpaired closer,
    an unterminated string) before anything too deep."""
    if not 0 <= max_depth <= _MAX_SUPPORTED_DEPTH:
        raise ValueError(f"max_depth must be 0..{_MAX_SUPPORTED_DEPTH}, got {max_depth}")
    plain = rb'[^\[\]{}"]++|"[^"\\]*+(?:\\.[^"\\]*+)*+"'
    level = rb"(?:" + plain + rb")*+(?:(?P<deep>[\[{]).*+)?"
    for _ in range(max_depth):
        level = rb"(?:" + plain + rb"|[\[{]" + level + rb"(?(deep)|[\]}]))*+"
    return re.compile(level, re.DOTALL)


def check_depth(data: bytes | str, *, max_depth: int = MAX_DEPTH, code: str = ErrorCode.VALIDATION_ERROR) -> None:
    """Refuse JSON text whose arrays and objects nest deeper than
    ``max_depth`` (brackets inside strings do not count).

    Exact for valid JSON. Text that turns malformed before it gets too deep
    is left to the decoder, which reports it before it could recurse far."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if raw.count(b"[") + raw.count(b"{") <= max_depth:
        return
    match = _json_within(max_depth).fullmatch(raw)
    if match is not None and match.group("deep") is not None:
        raise too_deep("JSON", max_depth, code)


def msgpack_may_exceed(data: bytes, max_depth: int = MAX_DEPTH) -> bool:
    """False when msgpack ``data`` holds too few container headers to nest
    deeper than ``max_depth``; True means "walk the decoded value" (bytes
    inside strings can look like headers)."""
    return len(data) - len(data.translate(None, _MSGPACK_CONTAINER_HEADERS)) > max_depth


def check_value_depth(value: Any, *, max_depth: int = MAX_DEPTH, code: str = ErrorCode.VALIDATION_ERROR) -> None:
    """Refuse a decoded value whose dicts, lists and tuples nest deeper than
    ``max_depth``. Level by level, never recursing; each level is split and
    flattened by C iterators, so even millions of tiny containers are cheap."""
    level: list[Any] = [value] if type(value) in _CONTAINERS else []
    depth = 0
    while level:
        depth += 1
        if depth > max_depth:
            raise too_deep("value", max_depth, code)
        is_dict = list(map(operator.is_, map(type, level), itertools.repeat(dict)))
        dicts = list(itertools.compress(level, is_dict))
        members = itertools.chain(
            itertools.chain.from_iterable(itertools.compress(level, map(operator.not_, is_dict))),
            itertools.chain.from_iterable(dicts),
            itertools.chain.from_iterable(map(dict.values, dicts)),
        )
        flat = list(members)
        level = list(itertools.compress(flat, map(_CONTAINERS.__contains__, map(type, flat))))
