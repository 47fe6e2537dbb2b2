"""Token-bucket rate limiters: ``__coord:rate:{name}`` holds the bucket
(tokens, last refill, capacity, refill rate), changed by compare-and-swap.
A refused acquire says how long until enough tokens are back."""

from __future__ import annotations

import asyncio
import math
import time

import msgspec

from aspen import clock
from aspen.coordination.space import (
    CAS_RETRIES,
    base_key,
    check_wait,
    conflict,
    wait_timeout,
)
from aspen.errors import AspenError, ErrorCode
from aspen.storage.protocol import KeyValueStore

MAX_CAPACITY = 1e9
MAX_RATE = 1e9  # tokens per second


class Bucket(msgspec.Struct, frozen=True):
    tokens: float
    last_ms: int
    capacity: float
    rate: float  # tokens per second


class RateDecision(msgspec.Struct, frozen=True, kw_only=True):
    allowed: bool
    remaining: float  # tokens left after this call
    retry_after_ms: int  # 0 when allowed


_bucket = msgspec.msgpack.Decoder(Bucket)
_enc = msgspec.msgpack.Encoder().encode


def _check(value: object, what: str, high: float, *, low_open: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AspenError(ErrorCode.RATE_LIMIT_INVALID, f"{what} must be a number")
    if (value <= 0 if low_open else value < 0) or value > high:
        raise AspenError(ErrorCode.RATE_LIMIT_INVALID, f"{what} must be in (0, {high:g}], got {value!r}", max=high)
    return float(value)


class RateLimiters:
    def __init__(self, kv: KeyValueStore) -> None:
        self.kv = kv

    @staticmethod
    def key(name: str) -> str:
        return base_key("rate", name)

    def _refilled(self, raw: bytes | None, capacity: float, rate: float, now: int) -> Bucket:
        if raw is None:
            return Bucket(capacity, now, capacity, rate)
        b = _bucket.decode(raw)
        tokens = min(capacity, b.tokens + max(0, now - b.last_ms) / 1000 * rate)
        return Bucket(tokens, now, capacity, rate)

    async def try_acquire(self, name: str, capacity: float, rate: float, tokens: float = 1) -> RateDecision:
        capacity, rate = _check(capacity, "capacity", MAX_CAPACITY), _check(rate, "refill rate", MAX_RATE)
        tokens = _check(tokens, "tokens", capacity)
        key = self.key(name)
        current = await self.kv.get(key)
        for _ in range(CAS_RETRIES):
            raw = None if current is None else current.value
            b = self._refilled(raw, capacity, rate, clock.now_ms())
            if b.tokens < tokens:
                return RateDecision(
                    allowed=False, remaining=b.tokens, retry_after_ms=math.ceil((tokens - b.tokens) / rate * 1000)
                )
            new = Bucket(b.tokens - tokens, b.last_ms, capacity, rate)
            r = await self.kv.compare_and_swap(key, raw, _enc(new))
            if r.succeeded:
                return RateDecision(allowed=True, remaining=new.tokens, retry_after_ms=0)
            current = r.actual
        raise conflict(key)

    async def acquire(
        self, name: str, capacity: float, rate: float, tokens: float = 1, *, timeout: float = 10.0
    ) -> RateDecision:
        """Wait (sleeping exactly the answer's ``retry_after_ms``) up to ``timeout``."""
        timeout = check_wait(timeout)
        give_up = time.monotonic() + timeout
        while True:
            d = await self.try_acquire(name, capacity, rate, tokens)
            if d.allowed:
                return d
            wait = d.retry_after_ms / 1000
            if time.monotonic() + wait > give_up:
                raise wait_timeout(name, timeout)
            await asyncio.sleep(wait)

    async def available(self, name: str, capacity: float, rate: float) -> float:
        capacity, rate = _check(capacity, "capacity", MAX_CAPACITY), _check(rate, "refill rate", MAX_RATE)
        current = await self.kv.get(self.key(name))
        return self._refilled(None if current is None else current.value, capacity, rate, clock.now_ms()).tokens

    async def reset(self, name: str) -> bool:
        return await self.kv.delete(self.key(name))
