"""The arguments every blob store checks the same way, and the limits behind them: one
definition for the local and the S3 backend, so both refuse the same inputs with the same
codes."""

from __future__ import annotations

from aspen.errors import AspenError, ErrorCode

DEFAULT_MAX_BLOB_SIZE = 1 << 30
DEFAULT_MAX_TOTAL_BYTES = 10 << 30
MAX_LIST_LIMIT = 1000
MAX_TAG_BYTES = 256
MAX_CHUNK_SIZE = 64 << 20
IO_CHUNK = 1 << 20
_HEX = frozenset("0123456789abcdef")


def check_hash(value: object) -> str:
    """A BLAKE3 hash as 64 hex digits; returned lowercase."""
    if not isinstance(value, str) or len(value) != 64 or not set(value.lower()) <= _HEX:
        raise AspenError(ErrorCode.INVALID_HASH, f"not a 64-digit hex BLAKE3 hash: {value!r:.80}")
    return value.lower()


def check_tag(tag: object) -> str:
    if not isinstance(tag, str) or not tag or len(tag.encode("utf-8", "replace")) > MAX_TAG_BYTES:
        raise AspenError(
            ErrorCode.INVALID_ARGUMENT, f"tag must be a string of 1..{MAX_TAG_BYTES} bytes, got {tag!r:.80}"
        )
    return tag


def check_nonneg_int(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"{name} must be an integer, got {value!r:.40}")
    if value < 0:
        raise AspenError(ErrorCode.INVALID_RANGE, f"{name} must not be negative, got {value}")
    return value


def check_read(offset: object, length: object, chunk_size: object) -> None:
    """The arguments of ``get_stream``."""
    check_nonneg_int(offset, "offset")
    if length is not None:
        check_nonneg_int(length, "length")
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"chunk_size must be 1..{MAX_CHUNK_SIZE}, got {chunk_size!r}")


def check_limits(**limits: object) -> None:
    """``max_blob_size``, ``max_total_bytes``: positive integers."""
    for name, value in limits.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise AspenError(ErrorCode.INVALID_ARGUMENT, f"{name} must be a positive integer, got {value!r}")


def too_large(size: int, limit: int) -> AspenError:
    return AspenError(ErrorCode.BLOB_TOO_LARGE, f"blob exceeds the limit of {limit} bytes", size=size, max=limit)


def check_list(limit: object, continuation: object) -> str:
    """The arguments of ``list``: the hash to list after ("" for the first page)."""
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIST_LIMIT:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"limit must be 1..{MAX_LIST_LIMIT}, got {limit!r}")
    if continuation is None:
        return ""
    try:
        return check_hash(continuation)
    except AspenError as exc:
        raise AspenError(ErrorCode.INVALID_CONTINUATION, "continuation token is malformed") from exc


def check_grace(grace_seconds: object) -> float:
    if (
        not isinstance(grace_seconds, (int, float))
        or isinstance(grace_seconds, bool)
        or not 0 <= grace_seconds < float("inf")
    ):
        raise AspenError(
            ErrorCode.INVALID_ARGUMENT, f"grace_seconds must be a finite number >= 0, got {grace_seconds!r}"
        )
    return float(grace_seconds)
