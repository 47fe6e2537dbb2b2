"""The service-registry plugin on a real store: registration, discovery and
its filters, fencing tokens, TTL expiry, deregistration, records other
writers left under ``__service:``, and hostile bodies (each a stable code,
nothing written)."""

from __future__ import annotations

import asyncio
import time

import pytest

from aspen.errors import AspenError, ErrorCode
from aspen.plugins import host_leases
from aspen.rpc.handler import Request, RequestContext


class Registry:
    def __init__(self, handler) -> None:
        self.handler = handler

    async def __call__(self, type_: str, body: object) -> dict:
        reply = await self.handler.handle(Request(type_, body), RequestContext())  # type: ignore[arg-type]
        return reply.body

    async def refused(self, type_: str, body: object) -> str:
        with pytest.raises(AspenError) as err:
            await self(type_, body)
        return err.value.code

    async def register(self, service: str, instance: str, **fields) -> int:
        body = {"service": service, "instance": instance, "address": f"{instance}.local:80", **fields}
        return (await self("ServiceRegister", body))["fencing_token"]

    async def names(self, service: str, **filters) -> list[str]:
        r = await self("ServiceDiscover", {"service": service, **filters})
        return [i["instance"] for i in r["instances"]]


@pytest.fixture
async def reg(load) -> Registry:
    return Registry(await load("service-registry"))


async def test_register_get_and_discover(reg):
    token = await reg.register("web", "a", version="1.4.2", tags=["eu", "prod"], weight=7, metadata={"zone": "b"})
    r = await reg("ServiceGetInstance", {"service": "web", "instance": "a"})
    assert r == {
        "service": "web", "instance": "a", "address": "a.local:80", "version": "1.4.2", "tags": ["eu", "prod"],
        "weight": 7, "metadata": {"zone": "b"}, "health": "healthy", "ttl": 30, "fencing_token": token,
        "registered_ms": r["registered_ms"], "updated_ms": r["registered_ms"],
    }  # fmt: skip
    assert abs(r["registered_ms"] - time.time() * 1000) < 60_000
    assert (await reg("ServiceDiscover", {"service": "web"}))["instances"] == [r]
    assert await reg.names("other") == []
    code = await reg.refused("ServiceGetInstance", {"service": "web", "instance": "b"})
    assert code == ErrorCode.SERVICE_NOT_FOUND


async def test_discovery_filters(reg):
    await reg.register("web", "a", version="1.4.2", tags=["eu", "prod"])
    await reg.register("web", "b", version="1.5.0", tags=["eu"], health="unhealthy")
    await reg.register("web", "c", version="2.0.0", tags=["us", "prod"], health="unknown")
    await reg.register("webx", "d", version="1.4.2", tags=["eu", "prod"])  # another service sharing a name prefix
    assert await reg.names("web") == ["a", "b", "c"]
    assert await reg.names("web", health="healthy") == ["a"]
    assert await reg.names("web", health="unhealthy") == ["b"]
    assert await reg.names("web", health="unknown") == ["c"]
    assert await reg.names("web", tags=["eu"]) == ["a", "b"]
    assert await reg.names("web", tags=["eu", "prod"]) == ["a"]  # all must match
    assert await reg.names("web", tags=["prod", "us"]) == ["c"]
    assert await reg.names("web", tags=["eu", "us"]) == []
    assert await reg.names("web", version_prefix="1.") == ["a", "b"]
    assert await reg.names("web", version_prefix="1.4") == ["a"]
    assert await reg.names("web", version_prefix="3") == []
    assert await reg.names("web", version_prefix="1.", tags=["eu"], health="unhealthy") == ["b"]
    assert (await reg("ServiceList", {})) == {"services": ["web", "webx"], "truncated": False}


async def test_discovery_limit_and_continuation(reg):
    for i in range(12):
        await reg.register("api", f"i{i:02}", tags=["even"] if i % 2 == 0 else [])
    first = await reg("ServiceDiscover", {"service": "api", "limit": 5})
    assert [i["instance"] for i in first["instances"]] == [f"i{i:02}" for i in range(5)] and first["truncated"]
    rest = await reg("ServiceDiscover", {"service": "api", "limit": 1000, "continuation": first["continuation"]})
    assert [i["instance"] for i in rest["instances"]] == [f"i{i:02}" for i in range(5, 12)]
    assert not rest["truncated"] and rest["continuation"] is None
    evens = await reg("ServiceDiscover", {"service": "api", "tags": ["even"], "limit": 6})
    assert len(evens["instances"]) == 6 and evens["truncated"]  # the 6th even is the 11th of 12: i11 is unread
    after = await reg("ServiceDiscover", {"service": "api", "tags": ["even"], "continuation": evens["continuation"]})
    assert after == {"service": "api", "instances": [], "truncated": False, "continuation": None}
    for limit in (0, 1001, -1, "5", 2**70):
        assert (
            await reg.refused("ServiceDiscover", {"service": "api", "limit": limit}) == ErrorCode.SERVICE_LIMIT_INVALID
        )
    foreign = {"service": "api", "continuation": "X19hcHBzOnNlY3JldA=="}  # "__apps:secret"
    assert await reg.refused("ServiceDiscover", foreign) == ErrorCode.KV_PREFIX_DENIED


async def test_discover_answers_at_most_1000(reg, kv):
    """1 000 results at most, and at most 1 000 keys scanned per call, so a
    service of 1 001 instances comes in two pages."""
    lease = (await kv.lease_grant(60)).id
    token = await reg.register("big", "seed")
    seed = (await kv.get("__service:big:seed")).value
    for i in range(1000):
        await kv.put(f"__service:big:n{i:04}", seed, lease=lease)
    page = await reg("ServiceDiscover", {"service": "big", "limit": 1000})
    assert len(page["instances"]) == 1000 and page["truncated"]
    rest = await reg("ServiceDiscover", {"service": "big", "continuation": page["continuation"]})
    assert [i["instance"] for i in rest["instances"]] == ["seed"] and rest["instances"][0]["fencing_token"] == token


async def test_fencing_tokens_grow_and_stale_ones_are_refused(reg):
    t1 = await reg.register("web", "a")
    t2 = await reg.register("web", "a", address="moved:81")  # the same instance again: the old one is fenced off
    assert t2 > t1
    target = {"service": "web", "instance": "a"}
    for type_, extra in [
        ("ServiceHeartbeat", {}),
        ("ServiceDeregister", {}),
        ("ServiceUpdateHealth", {"health": "unhealthy"}),
        ("ServiceUpdateMetadata", {"weight": 1}),
    ]:
        assert await reg.refused(type_, {**target, "fencing_token": t1, **extra}) == ErrorCode.SERVICE_STALE_TOKEN
        assert (
            await reg.refused(type_, {**target, "fencing_token": t2 + 1000, **extra}) == ErrorCode.SERVICE_STALE_TOKEN
        )
    got = await reg("ServiceGetInstance", target)
    assert (got["address"], got["health"], got["weight"], got["fencing_token"]) == ("moved:81", "healthy", 100, t2)
    assert (await reg("ServiceHeartbeat", {**target, "fencing_token": t2})) == {"fencing_token": t2, "ttl": 30}
    await reg("ServiceDeregister", {**target, "fencing_token": t2})
    t3 = await reg.register("web", "a")
    assert t3 > t2


async def test_updates_keep_the_token_and_the_lease(reg, kv):
    token = await reg.register("web", "a", tags=["x"], ttl=40)
    lease = (await kv.get("__service:web:a")).lease
    target = {"service": "web", "instance": "a", "fencing_token": token}
    r = await reg("ServiceUpdateHealth", {**target, "health": "unhealthy"})
    assert r["health"] == "unhealthy" and r["fencing_token"] == token and r["tags"] == ["x"]
    r = await reg("ServiceUpdateMetadata", {**target, "version": "9.0", "tags": ["y", "z"], "metadata": {"k": "v"}})
    assert (r["version"], r["tags"], r["metadata"], r["health"]) == ("9.0", ["y", "z"], {"k": "v"}, "unhealthy")
    assert r["updated_ms"] >= r["registered_ms"]
    kv_now = await kv.get("__service:web:a")
    assert kv_now.lease == lease and kv_now.create_revision == token
    assert await reg.names("web", health="unhealthy", tags=["z"], version_prefix="9") == ["a"]
    assert await reg.refused("ServiceUpdateHealth", target) == ErrorCode.SERVICE_HEALTH_INVALID


async def _gone(reg, service: str, instance: str, within: float) -> float:
    start = time.monotonic()
    while instance in await reg.names(service):
        assert time.monotonic() - start < within, f"{instance} outlived its TTL"
        await asyncio.sleep(0.1)
    return time.monotonic() - start


async def test_an_instance_whose_heartbeats_stop_disappears_within_its_ttl(reg, kv):
    kept = await reg.register("web", "kept", ttl=2)
    await reg.register("web", "dropped", ttl=2)
    stop = time.monotonic() + 3.0

    async def beat() -> None:
        while time.monotonic() < stop:
            await reg("ServiceHeartbeat", {"service": "web", "instance": "kept", "fencing_token": kept})
            await asyncio.sleep(0.5)

    beating = asyncio.create_task(beat())
    await _gone(reg, "web", "dropped", within=2.0 + 1.5)  # the TTL plus the store's expiry sweep
    await beating
    assert await reg.names("web") == ["kept"]  # heartbeats kept it past its TTL
    code = await reg.refused("ServiceHeartbeat", {"service": "web", "instance": "dropped", "fencing_token": kept + 1})
    assert code == ErrorCode.SERVICE_NOT_FOUND
    await _gone(reg, "web", "kept", within=2.0 + 1.5)
    assert (await reg("ServiceList", {}))["services"] == []
    assert await kv.lease_list() == []  # the instances' leases (and their markers) are gone too


async def test_deregister_removes_the_instance_and_its_lease(reg, kv):
    token = await reg.register("web", "a")
    await reg.register("web", "b")
    assert len(await kv.lease_list()) == 2
    r = await reg("ServiceDeregister", {"service": "web", "instance": "a", "fencing_token": token})
    assert r == {"deregistered": True}
    assert await reg.names("web") == ["b"] and len(await kv.lease_list()) == 1
    code = await reg.refused("ServiceDeregister", {"service": "web", "instance": "a", "fencing_token": token})
    assert code == ErrorCode.SERVICE_NOT_FOUND


async def test_the_registry_is_bounded_by_the_plugins_lease_quota(reg, monkeypatch):
    monkeypatch.setattr(host_leases, "MAX_LEASES_PER_PLUGIN", 3)
    for i in range(3):
        await reg.register("web", f"i{i}")
    assert await reg.refused("ServiceRegister", {"service": "web", "instance": "x", "address": "a"}) == (
        ErrorCode.PLUGIN_TOO_MANY_LEASES
    )
    assert await reg.names("web") == ["i0", "i1", "i2"]
    token = await reg.register("web", "i0")  # re-registering frees the old lease first
    assert await reg.names("web") == ["i0", "i1", "i2"] and token > 0


async def test_keys_other_writers_left_under_the_prefix(reg, kv):
    """Anything a client with KV rights wrote under ``__service:`` is skipped
    by discovery and replaced by a registration, never trusted."""
    await kv.put("__service:web:junk", b"not json")
    await kv.put("__service:web:bin", b"\xff\xfe")
    await kv.put("__service:web:other", b'{"address": 5}')
    await kv.put("__service:loose", b"x")  # no instance part
    await kv.put("__service:db:x", b"[]")
    await reg.register("web", "real")
    assert await reg.names("web") == ["real"]
    assert (await reg("ServiceList", {}))["services"] == ["db", "web"]
    assert (
        await reg.refused("ServiceGetInstance", {"service": "web", "instance": "junk"}) == ErrorCode.SERVICE_NOT_FOUND
    )
    token = await reg.register("web", "junk")
    assert (await kv.get("__service:web:junk")).create_revision == token
    assert await reg.names("web") == ["junk", "real"]


async def test_concurrent_re_registrations_leave_one_instance(reg, kv):
    results = await asyncio.gather(
        *(reg("ServiceRegister", {"service": "web", "instance": "a", "address": f"h{i}"}) for i in range(6)),
        return_exceptions=True,
    )
    tokens = [r["fencing_token"] for r in results if isinstance(r, dict)]
    assert tokens and len(set(tokens)) == len(tokens)
    for r in results:
        assert isinstance(r, dict) or r.code == ErrorCode.SERVICE_CONFLICT
    live = await kv.get("__service:web:a")
    assert live.create_revision == max(tokens)
    assert len(await kv.lease_list()) == 1  # every loser's lease was revoked
