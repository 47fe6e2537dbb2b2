"""Counters: unsigned (0..2**64-1) and signed (int64), one key each holding
the decimal value. Every change is a compare-and-swap against the value
read, retried with the value the failed swap returned (one round trip per
attempt, the same as a hand-written CAS loop). Going past a bound is an
error (``COUNTER_UNDERFLOW`` / ``COUNTER_OVERFLOW``), never a wrap or a
silent saturation."""

from __future__ import annotations

from aspen.coordination.space import CAS_RETRIES, base_key, check_name, conflict
from aspen.errors import AspenError, ErrorCode
from aspen.storage.protocol import KeyValueStore
from aspen.storage.records import KeyValue

UNSIGNED = (0, (1 << 64) - 1)
SIGNED = (-(1 << 63), (1 << 63) - 1)


def _parse(kv: KeyValue | None) -> int:
    if kv is None:
        return 0
    try:
        return int(kv.value)
    except ValueError:
        raise AspenError(ErrorCode.COUNTER_NOT_A_NUMBER, f"{kv.key!r} does not hold a number") from None


def _check_int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"{what} must be an integer, got {value!r}")
    return value


class Counters:
    def __init__(self, kv: KeyValueStore, *, signed: bool = False, kind: str | None = None) -> None:
        self.kv = kv
        self.signed = signed
        self.bounds = SIGNED if signed else UNSIGNED
        self.kind = kind or ("scounter" if signed else "counter")  # the key space (sequences use their own)

    def key(self, name: str) -> str:
        return base_key(self.kind, name)

    def _bounded(self, name: str, value: int) -> int:
        low, high = self.bounds
        if value < low:
            code = ErrorCode.COUNTER_OVERFLOW if self.signed else ErrorCode.COUNTER_UNDERFLOW
            raise AspenError(
                code, f"counter {name!r} would go to {value}, below {low}", name=name, value=value, min=low
            )
        if value > high:
            raise AspenError(
                ErrorCode.COUNTER_OVERFLOW, f"counter {name!r} would go to {value}, above {high}", name=name, max=high
            )
        return value

    async def get(self, name: str) -> int:
        return _parse(await self.kv.get(self.key(check_name(name))))

    async def add(self, name: str, delta: int) -> int:
        """Add ``delta`` (may be negative); returns the new value."""
        delta = _check_int(delta, "delta")
        key = self.key(name)
        current = await self.kv.get(key)
        for _ in range(CAS_RETRIES):
            new = self._bounded(name, _parse(current) + delta)
            r = await self.kv.compare_and_swap(key, None if current is None else current.value, str(new).encode())
            if r.succeeded:
                return new
            current = r.actual
        raise conflict(key)

    async def set(self, name: str, value: int) -> int:
        value = self._bounded(name, _check_int(value, "value"))
        await self.kv.put(self.key(name), str(value).encode())
        return value

    async def compare_and_set(self, name: str, expected: int, new: int) -> tuple[bool, int]:
        """Set to ``new`` if the value is ``expected`` (a missing counter is 0);
        returns whether it did and the value now."""
        expected, new = _check_int(expected, "expected"), self._bounded(name, _check_int(new, "new"))
        key = self.key(name)
        current = await self.kv.get(key)
        for _ in range(CAS_RETRIES):
            if _parse(current) != expected:
                return False, _parse(current)
            r = await self.kv.compare_and_swap(key, None if current is None else current.value, str(new).encode())
            if r.succeeded:
                return True, new
            current = r.actual
        raise conflict(key)
