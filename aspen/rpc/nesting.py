"""Bound the nesting depth of JSON before it is decoded.

msgspec (and the standard library) decode nested arrays and objects by
recursion, so a document a few thousand levels deep raises ``RecursionError``
from inside the decoder: an internal error with a traceback instead of a
clear refusal. :func:`check_depth` measures the depth first, without decoding.

It looks only at the bytes that matter, and all of it runs in C. A document
with no more openers than the limit is done at once. Otherwise escapes are
dropped (``\\\\`` pairs, then ``\\"``), so every remaining ``"`` opens or
closes a string; only quotes and brackets are kept (``{}`` folded onto
``[]``); adjacent quotes are dropped (that never moves a bracket into or out
of a string), and what is left between quotes is string content. Removing
every adjacent ``[]`` pair then lowers the depth of a balanced document by
exactly one, so one that empties within ``max_depth`` rounds is within the
limit; anything else (too deep, or unbalanced) gets one exact scan.
Malformed JSON that is not too deep is left for the decoder to report.
"""

from __future__ import annotations

from aspen.errors import AspenError, ErrorCode

_FOLD = bytes.maketrans(b"{}", b"[]")
_OTHER = bytes(b for b in range(256) if b not in b'[]{}"')


def _brackets(data: bytes) -> bytes:
    """The ``[``/``]`` of ``data`` outside strings, objects folded onto arrays."""
    unescaped = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    kept = unescaped.translate(_FOLD, _OTHER).replace(b'""', b"")
    return b"".join(kept.split(b'"')[0::2]) if b'"' in kept else kept


def _too_deep(brackets: bytes, max_depth: int) -> bool:
    rest = brackets
    for _ in range(max_depth):
        shorter = rest.replace(b"[]", b"")
        if not shorter:
            return False
        if len(shorter) == len(rest):
            break
        rest = shorter
    depth = 0
    for byte in brackets:  # exact: stops at the first level too many, or at a stray closer
        if byte == 0x5B:  # [
            depth += 1
            if depth > max_depth:
                return True
        else:
            depth -= 1
            if depth < 0:
                return False  # not JSON; the decoder says so
    return False


def check_depth(data: bytes | str, *, max_depth: int = 64, code: str = ErrorCode.VALIDATION_ERROR) -> None:
    """Raise ``AspenError(code)`` when the JSON text ``data`` nests arrays and
    objects deeper than ``max_depth`` (``{"a": [1]}`` is depth 2)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if raw.count(b"[") + raw.count(b"{") <= max_depth:
        return
    if _too_deep(_brackets(raw), max_depth):
        raise AspenError(
            code,
            f"JSON nested at least {max_depth + 1} levels deep; the limit is {max_depth}",
            max_depth=max_depth,
        )
