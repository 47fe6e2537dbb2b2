"""The KeyValueStore conformance suite: every backend must pass it.

Only behaviour visible through the protocol is asserted. Revision numbering
differs between backends (etcd starts elsewhere and counts other things), so
tests assert relations between revisions, never absolute values.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator

import pytest

from aspen.errors import AspenError, ErrorCode
from aspen.storage.protocol import KeyValueStore
from aspen.storage.records import Compare, DeleteOp, GetOp, PutOp, RangeOp, WatchEvent

MiB = 1 << 20


async def take(events: AsyncIterator[WatchEvent], n: int, timeout: float = 10.0) -> list[WatchEvent]:
    out = []
    for _ in range(n):
        out.append(await asyncio.wait_for(anext(events), timeout))
    return out


async def nothing_more(events: AsyncIterator[WatchEvent], wait: float = 0.4) -> bool:
    try:
        await asyncio.wait_for(anext(events), wait)
    except TimeoutError:
        return True
    return False


async def expect(code: str, coro) -> AspenError:
    with pytest.raises(AspenError) as info:
        await coro
    assert info.value.code == code, info.value
    return info.value


# --- get / put / delete ----------------------------------------------------------


async def test_conforms_to_protocol(kv: KeyValueStore) -> None:
    assert isinstance(kv, KeyValueStore)


async def test_get_missing_is_none(kv: KeyValueStore) -> None:
    assert await kv.get("nope") is None


async def test_put_then_get_versions_and_revisions(kv: KeyValueStore) -> None:
    r1 = await kv.put("k", b"one")
    e1 = await kv.get("k")
    assert e1 is not None
    assert (e1.key, e1.value, e1.version, e1.lease) == ("k", b"one", 1, 0)
    assert e1.create_revision == e1.mod_revision == r1
    r2 = await kv.put("k", b"two")
    assert r2 > r1
    e2 = await kv.get("k")
    assert (e2.value, e2.version, e2.create_revision, e2.mod_revision) == (b"two", 2, r1, r2)
    assert await kv.current_revision() == r2


async def test_every_write_bumps_the_revision_once(kv: KeyValueStore) -> None:
    revs = [await kv.put(f"k{i}", b"v") for i in range(5)]
    assert revs == sorted(set(revs))
    assert all(b == a + 1 for a, b in itertools.pairwise(revs))


async def test_delete_removes_and_recreate_starts_at_version_one(kv: KeyValueStore) -> None:
    await kv.put("k", b"a")
    await kv.put("k", b"b")
    before = await kv.current_revision()
    assert await kv.delete("k") is True
    after = await kv.current_revision()
    assert after == before + 1
    assert await kv.get("k") is None
    r = await kv.put("k", b"c")
    e = await kv.get("k")
    assert (e.version, e.create_revision, e.mod_revision) == (1, r, r)


async def test_delete_missing_key_changes_nothing(kv: KeyValueStore) -> None:
    await kv.put("other", b"x")
    before = await kv.current_revision()
    assert await kv.delete("missing") is False
    assert await kv.current_revision() == before


async def test_delete_prefix_deletes_only_that_prefix_at_one_revision(kv: KeyValueStore) -> None:
    for k in ("app/a", "app/b", "app/c/d", "apple", "b"):
        await kv.put(k, b"v")
    start = await kv.current_revision() + 1
    events = kv.watch("", start)
    assert await kv.delete_prefix("app/") == 3
    assert [e.key for e in (await kv.scan()).entries] == ["apple", "b"]
    got = await take(events, 3)
    assert {e.kv.key for e in got} == {"app/a", "app/b", "app/c/d"}
    assert all(e.type == "delete" for e in got)
    assert len({e.revision for e in got}) == 1
    await events.aclose()
    assert await kv.delete_prefix("none/") == 0


async def test_values_are_bytes_and_may_be_empty_or_binary(kv: KeyValueStore) -> None:
    blob = bytes(range(256)) * 4
    await kv.put("bin", blob)
    await kv.put("empty", b"")
    assert (await kv.get("bin")).value == blob
    assert (await kv.get("empty")).value == b""


async def test_limits_are_inclusive(kv: KeyValueStore) -> None:
    key = "k" * 1024
    await kv.put(key, b"x" * MiB)
    e = await kv.get(key)
    assert len(e.value) == MiB


# --- scan -------------------------------------------------------------------------

KEYS = ["a", "a/1", "a/2", "a/b", "ab", "b", "z", "é", "éa", "\u00ff", "\uffff", "\U0001f600", "~"]


async def _fill(kv: KeyValueStore, keys: list[str]) -> None:
    await kv.batch_write([PutOp(k, k.encode()) for k in keys])


async def test_scan_orders_keys_bytewise(kv: KeyValueStore) -> None:
    await _fill(kv, KEYS)
    page = await kv.scan()
    assert [e.key for e in page.entries] == sorted(KEYS, key=lambda k: k.encode())
    assert page.is_truncated is False and page.continuation_token is None
    assert all(e.value == e.key.encode() for e in page.entries)


async def test_scan_by_prefix(kv: KeyValueStore) -> None:
    await _fill(kv, KEYS)
    assert [e.key for e in (await kv.scan("a/")).entries] == ["a/1", "a/2", "a/b"]
    assert [e.key for e in (await kv.scan("é")).entries] == ["é", "éa"]
    assert (await kv.scan("nothing")).entries == []


async def test_scan_by_range(kv: KeyValueStore) -> None:
    await _fill(kv, KEYS)
    assert [e.key for e in (await kv.scan(start="a/2", end="b")).entries] == ["a/2", "a/b", "ab"]
    assert [e.key for e in (await kv.scan(start="z")).entries] == [
        "z",
        "~",
        "é",
        "éa",
        "\u00ff",
        "\uffff",
        "\U0001f600",
    ]
    assert [e.key for e in (await kv.scan(end="a/1")).entries] == ["a"]
    assert (await kv.scan(start="b", end="b")).entries == []


async def test_scan_pages_with_continuation_cover_every_key_once(kv: KeyValueStore) -> None:
    keys = [f"p/{i:03d}" for i in range(25)]
    await _fill(kv, keys + ["q"])
    seen, token, pages = [], None, 0
    while True:
        page = await kv.scan("p/", limit=7, continuation=token)
        pages += 1
        seen += [e.key for e in page.entries]
        if not page.is_truncated:
            assert page.continuation_token is None
            break
        assert len(page.entries) == 7 and isinstance(page.continuation_token, str)
        token = page.continuation_token
    assert seen == keys and pages == 4


async def test_scan_continuation_with_range(kv: KeyValueStore) -> None:
    await _fill(kv, [f"r{i}" for i in range(10)])
    first = await kv.scan(start="r2", end="r8", limit=4)
    assert [e.key for e in first.entries] == ["r2", "r3", "r4", "r5"] and first.is_truncated
    rest = await kv.scan(start="r2", end="r8", limit=4, continuation=first.continuation_token)
    assert [e.key for e in rest.entries] == ["r6", "r7"] and not rest.is_truncated


async def test_scan_default_limit_is_1000_and_max_is_10000(kv: KeyValueStore) -> None:
    await kv.batch_write([PutOp(f"k{i:05d}", b"") for i in range(1000)])
    await kv.batch_write([PutOp(f"k{i:05d}", b"") for i in range(1000, 1001)])
    page = await kv.scan("k")
    assert len(page.entries) == 1000 and page.is_truncated
    assert len((await kv.scan("k", limit=10_000)).entries) == 1001
    await expect(ErrorCode.TOO_MANY_OPERATIONS, kv.scan("k", limit=10_001))
    await expect(ErrorCode.INVALID_ARGUMENT, kv.scan("k", limit=0))


async def test_scan_reports_a_current_revision(kv: KeyValueStore) -> None:
    r = await kv.put("k", b"v")
    assert (await kv.scan()).revision >= r


# --- compare-and-swap -------------------------------------------------------------


async def test_cas_create_only_when_absent(kv: KeyValueStore) -> None:
    res = await kv.compare_and_swap("k", None, b"v1")
    assert res.succeeded and res.actual.value == b"v1" and res.actual.version == 1
    assert res.revision == res.actual.mod_revision
    again = await kv.compare_and_swap("k", None, b"v2")
    assert not again.succeeded and again.actual.value == b"v1"
    assert (await kv.get("k")).value == b"v1"


async def test_cas_swaps_on_match_and_reports_actual_on_mismatch(kv: KeyValueStore) -> None:
    await kv.put("k", b"a")
    ok = await kv.compare_and_swap("k", b"a", b"b")
    assert ok.succeeded and ok.actual.value == b"b" and ok.actual.version == 2
    before = await kv.current_revision()
    bad = await kv.compare_and_swap("k", b"a", b"c")
    assert not bad.succeeded and bad.actual.value == b"b"
    assert await kv.current_revision() == before
    missing = await kv.compare_and_swap("nope", b"a", b"c")
    assert not missing.succeeded and missing.actual is None
    assert await kv.get("nope") is None


async def test_cas_clears_the_lease(kv: KeyValueStore) -> None:
    lease = await kv.lease_grant(60)
    await kv.put("k", b"a", lease=lease.id)
    assert (await kv.get("k")).lease == lease.id
    assert (await kv.compare_and_swap("k", b"a", b"b")).succeeded
    assert (await kv.get("k")).lease == 0
    assert await kv.lease_revoke(lease.id) == 0
    assert (await kv.get("k")).value == b"b"


async def test_compare_and_delete(kv: KeyValueStore) -> None:
    await kv.put("k", b"a")
    bad = await kv.compare_and_delete("k", b"x")
    assert not bad.succeeded and bad.actual.value == b"a"
    ok = await kv.compare_and_delete("k", b"a")
    assert ok.succeeded and ok.actual is None
    assert await kv.get("k") is None
    gone = await kv.compare_and_delete("k", b"a")
    assert not gone.succeeded and gone.actual is None


# --- batches ----------------------------------------------------------------------


async def test_batch_read_keeps_order_and_reports_missing(kv: KeyValueStore) -> None:
    await kv.put("a", b"1")
    await kv.put("c", b"3")
    got = await kv.batch_read(["c", "b", "a"])
    assert [e.value if e else None for e in got] == [b"3", None, b"1"]
    assert await kv.batch_read([]) == []


async def test_batch_write_applies_everything_at_one_revision(kv: KeyValueStore) -> None:
    await kv.put("old", b"x")
    await kv.put("pre/1", b"x")
    rev = await kv.batch_write([PutOp("a", b"1"), PutOp("b", b"2"), DeleteOp("old"), DeleteOp("pre/", prefix=True)])
    a, b = await kv.batch_read(["a", "b"])
    assert a.mod_revision == b.mod_revision == rev
    assert await kv.get("old") is None and await kv.get("pre/1") is None
    assert await kv.current_revision() == rev


async def test_batch_write_is_atomic_when_an_op_fails(kv: KeyValueStore) -> None:
    before = await kv.current_revision()
    await expect(ErrorCode.LEASE_NOT_FOUND, kv.batch_write([PutOp("a", b"1"), PutOp("b", b"2", lease=987654321)]))
    assert await kv.get("a") is None
    assert await kv.current_revision() == before


@pytest.mark.parametrize(
    "ops",
    [
        [PutOp("d/a", b"1"), PutOp("d/a", b"2")],
        [PutOp("d/a", b"1"), DeleteOp("d/a")],
        [PutOp("d/a", b"1"), DeleteOp("d/", prefix=True)],
    ],
    ids=["put-put", "put-delete", "put-under-prefix-delete"],
)
async def test_a_batch_writes_each_key_once(kv: KeyValueStore, ops) -> None:
    before = await kv.current_revision()
    await expect(ErrorCode.INVALID_ARGUMENT, kv.batch_write(ops))
    await expect(ErrorCode.INVALID_ARGUMENT, kv.transaction([], ops))
    await expect(ErrorCode.INVALID_ARGUMENT, kv.transaction([], [], ops))
    assert await kv.get("d/a") is None and await kv.current_revision() == before
    # overlapping deletes are fine, and each branch is checked on its own
    await kv.batch_write([DeleteOp("d/a"), DeleteOp("d/", prefix=True)])
    assert (await kv.transaction([], [PutOp("d/a", b"1")], [PutOp("d/a", b"2")])).succeeded
    assert (await kv.get("d/a")).value == b"1"


async def test_concurrent_writes_all_land_with_distinct_revisions(kv: KeyValueStore) -> None:
    revs = await asyncio.gather(*(kv.put(f"c{i}", str(i).encode()) for i in range(64)))
    assert len(set(revs)) == 64
    entries = await kv.batch_read([f"c{i}" for i in range(64)])
    assert [e.mod_revision for e in entries] == list(revs)
    assert [e.value for e in entries] == [str(i).encode() for i in range(64)]


async def test_one_failing_write_does_not_fail_concurrent_ones(kv: KeyValueStore) -> None:
    results = await asyncio.gather(
        *(kv.put(f"g{i}", b"v", lease=(424242 if i == 5 else 0)) for i in range(20)), return_exceptions=True
    )
    assert isinstance(results[5], AspenError) and results[5].code == ErrorCode.LEASE_NOT_FOUND
    assert all(isinstance(r, int) for i, r in enumerate(results) if i != 5)
    assert len((await kv.scan("g")).entries) == 19


async def test_a_failing_batch_among_concurrent_ones_leaves_no_trace(kv: KeyValueStore) -> None:
    def ops(i: int):
        bad = 555_555 if i == 7 else 0
        return [PutOp(f"b{i}/1", b"v"), PutOp(f"b{i}/2", b"v", lease=bad), DeleteOp(f"b{i}/0")]

    await kv.batch_write([PutOp(f"b{i}/0", b"old") for i in range(16)])
    results = await asyncio.gather(*(kv.batch_write(ops(i)) for i in range(16)), return_exceptions=True)
    assert isinstance(results[7], AspenError) and results[7].code == ErrorCode.LEASE_NOT_FOUND
    assert len({r for r in results if isinstance(r, int)}) == 15
    assert [e.key for e in (await kv.scan("b7/")).entries] == ["b7/0"]
    assert (await kv.get("b7/0")).value == b"old"
    assert len((await kv.scan("b")).entries) == 15 * 2 + 1


# --- transactions -----------------------------------------------------------------


async def test_txn_success_branch_runs_at_one_revision(kv: KeyValueStore) -> None:
    await kv.put("k", b"v")
    await kv.put("r/1", b"x")
    res = await kv.transaction(
        [Compare("k", "value", "==", b"v"), Compare("k", "version", "==", 1), Compare("nope", "exists", "==", False)],
        [PutOp("k", b"w"), PutOp("n", b"1"), GetOp("k"), RangeOp("r/"), DeleteOp("r/", prefix=True)],
        [PutOp("failed", b"1")],
    )
    assert res.succeeded and res.failed_compare is None
    put1, put2, get, rng, dele = res.results
    assert put1.op == "put" and put1.revision == put2.revision == res.revision
    assert get.op == "get" and get.kv.value == b"w" and get.kv.version == 2  # sees the txn's own put
    assert rng.op == "range" and [e.key for e in rng.kvs] == ["r/1"] and rng.more is False
    assert dele.op == "delete" and dele.deleted == 1
    assert await kv.get("failed") is None
    assert await kv.current_revision() == res.revision


async def test_txn_reports_first_failed_compare_and_runs_failure_branch(kv: KeyValueStore) -> None:
    await kv.put("k", b"v")
    before = await kv.current_revision()
    res = await kv.transaction(
        [Compare("k", "exists", "==", True), Compare("k", "value", "==", b"other"), Compare("k", "version", "==", 99)],
        [PutOp("s", b"1")],
        [GetOp("k"), GetOp("missing")],
    )
    assert not res.succeeded and res.failed_compare == 1
    assert res.results[0].kv.value == b"v" and res.results[1].kv is None
    assert await kv.get("s") is None
    assert res.revision == before == await kv.current_revision()


@pytest.mark.parametrize(
    "compare, holds",
    [
        (Compare("missing", "version", "==", 0), True),
        (Compare("missing", "create_revision", "==", 0), True),
        (Compare("missing", "mod_revision", "<", 1), True),
        (Compare("missing", "exists", "==", False), True),
        (Compare("missing", "exists", "!=", True), True),
        (Compare("missing", "value", "==", b""), False),
        (Compare("missing", "value", "!=", b"x"), False),
        (Compare("k", "value", "==", b"abc"), True),
        (Compare("k", "value", "!=", b"abc"), False),
        (Compare("k", "value", ">", b"abb"), True),
        (Compare("k", "value", "<", b"abb"), False),
        (Compare("k", "version", ">", 1), True),
        (Compare("k", "version", "<", 2), False),
        (Compare("k", "exists", "==", True), True),
    ],
)
async def test_txn_compare_semantics(kv: KeyValueStore, compare: Compare, holds: bool) -> None:
    await kv.put("k", b"x")
    await kv.put("k", b"abc")
    res = await kv.transaction([compare], [GetOp("k")], [])
    assert res.succeeded is holds
    assert res.failed_compare == (None if holds else 0)


async def test_txn_revision_compares(kv: KeyValueStore) -> None:
    r1 = await kv.put("k", b"1")
    r2 = await kv.put("k", b"2")
    res = await kv.transaction(
        [
            Compare("k", "create_revision", "==", r1),
            Compare("k", "mod_revision", "==", r2),
            Compare("k", "mod_revision", ">", r1),
        ]
    )
    assert res.succeeded
    res = await kv.transaction([Compare("k", "mod_revision", "==", r1)])
    assert res.failed_compare == 0


async def test_txn_without_writes_does_not_bump_revision(kv: KeyValueStore) -> None:
    await kv.put("k", b"v")
    before = await kv.current_revision()
    res = await kv.transaction([], [GetOp("k"), DeleteOp("missing")])
    assert res.succeeded and res.results[1].deleted == 0
    assert res.revision == before == await kv.current_revision()


async def test_txn_range_limit_reports_more(kv: KeyValueStore) -> None:
    await _fill(kv, ["r/a", "r/b", "r/c"])
    res = await kv.transaction([], [RangeOp("r/", limit=2)])
    assert [e.key for e in res.results[0].kvs] == ["r/a", "r/b"] and res.results[0].more


async def test_txn_with_unknown_lease_fails_whole(kv: KeyValueStore) -> None:
    await expect(ErrorCode.LEASE_NOT_FOUND, kv.transaction([], [PutOp("a", b"1"), PutOp("b", b"1", lease=31337)]))
    assert await kv.get("a") is None


# --- leases -----------------------------------------------------------------------


async def test_lease_grant_ttl_keepalive_and_list(kv: KeyValueStore) -> None:
    lease = await kv.lease_grant(60)
    assert lease.id > 0 and lease.granted_ttl == 60 and 0 < lease.remaining_ttl <= 60
    await kv.put("l/a", b"1", lease=lease.id)
    await kv.put("l/b", b"2", lease=lease.id)
    assert (await kv.get("l/a")).lease == lease.id
    info = await kv.lease_time_to_live(lease.id)
    assert info.id == lease.id and info.granted_ttl == 60 and 55 <= info.remaining_ttl <= 60
    assert sorted(info.keys) == ["l/a", "l/b"]
    alive = await kv.lease_keepalive(lease.id)
    assert alive.id == lease.id and 55 <= alive.remaining_ttl <= 60
    assert lease.id in [le.id for le in await kv.lease_list()]


async def test_lease_grant_with_chosen_id(kv: KeyValueStore) -> None:
    lease = await kv.lease_grant(30, lease_id=7_000_001)
    assert lease.id == 7_000_001
    assert (await kv.lease_time_to_live(7_000_001)).granted_ttl == 30


async def test_lease_revoke_deletes_attached_keys_with_events(kv: KeyValueStore) -> None:
    lease = await kv.lease_grant(60)
    await kv.put("l/a", b"1", lease=lease.id)
    await kv.put("l/b", b"2", lease=lease.id)
    await kv.put("l/c", b"3")
    events = kv.watch("l/", await kv.current_revision() + 1)
    assert await kv.lease_revoke(lease.id) == 2
    got = await take(events, 2)
    assert sorted(e.kv.key for e in got) == ["l/a", "l/b"] and {e.type for e in got} == {"delete"}
    await events.aclose()
    assert [e.key for e in (await kv.scan("l/")).entries] == ["l/c"]
    await expect(ErrorCode.LEASE_NOT_FOUND, kv.lease_time_to_live(lease.id))
    assert lease.id not in [le.id for le in await kv.lease_list()]


async def test_overwriting_without_lease_detaches_key(kv: KeyValueStore) -> None:
    lease = await kv.lease_grant(60)
    await kv.put("k", b"1", lease=lease.id)
    await kv.put("k", b"2")
    assert await kv.lease_revoke(lease.id) == 0
    assert (await kv.get("k")).value == b"2"


async def test_lease_expiry_deletes_keys_and_emits_delete_events(kv: KeyValueStore) -> None:
    t0 = time.monotonic()
    lease = await kv.lease_grant(1)
    await kv.put("exp/a", b"1", lease=lease.id)
    await kv.put("keep", b"1")
    start = await kv.current_revision() + 1
    events = kv.watch("exp/", start)
    (ev,) = await take(events, 1, timeout=15)
    assert ev.type == "delete" and ev.kv.key == "exp/a" and ev.revision >= start
    assert time.monotonic() - t0 >= 0.9  # not deleted before its TTL ran out
    await events.aclose()
    assert await kv.get("exp/a") is None
    assert (await kv.get("keep")).value == b"1"
    await expect(ErrorCode.LEASE_NOT_FOUND, kv.lease_keepalive(lease.id))


async def test_unknown_lease_is_lease_not_found_everywhere(kv: KeyValueStore) -> None:
    unknown = 123456789
    await expect(ErrorCode.LEASE_NOT_FOUND, kv.put("k", b"v", lease=unknown))
    await expect(ErrorCode.LEASE_NOT_FOUND, kv.lease_keepalive(unknown))
    await expect(ErrorCode.LEASE_NOT_FOUND, kv.lease_revoke(unknown))
    await expect(ErrorCode.LEASE_NOT_FOUND, kv.lease_time_to_live(unknown))
    assert await kv.get("k") is None


@pytest.mark.parametrize("ttl", [0, -1, "10", 1.5, True])
async def test_bad_lease_ttl(kv: KeyValueStore, ttl: object) -> None:
    await expect(ErrorCode.INVALID_ARGUMENT, kv.lease_grant(ttl))  # type: ignore[arg-type]


# --- watch ------------------------------------------------------------------------


async def test_watch_replays_then_streams_live_in_order(kv: KeyValueStore) -> None:
    r1 = await kv.put("w/a", b"1")
    await kv.put("other", b"x")
    r2 = await kv.put("w/b", b"2")
    events = kv.watch("w/", r1)
    got = await take(events, 2)
    assert [(e.type, e.kv.key, e.revision) for e in got] == [("put", "w/a", r1), ("put", "w/b", r2)]
    r3 = await kv.put("w/a", b"3")
    await kv.put("other", b"y")
    await kv.delete("w/b")
    live = await take(events, 2)
    assert live[0].type == "put" and live[0].revision == r3 and live[0].kv.value == b"3"
    assert live[0].kv.version == 2 and live[0].kv.create_revision == r1 and live[0].kv.mod_revision == r3
    assert live[1].type == "delete" and live[1].kv.key == "w/b" and live[1].revision > r3
    assert live[1].kv.mod_revision == live[1].revision and live[1].kv.value == b""
    assert await nothing_more(events)
    await events.aclose()


async def test_watch_without_start_sees_only_new_events(kv: KeyValueStore) -> None:
    await kv.put("n/old", b"1")
    await kv.current_revision()
    events = kv.watch("n/")
    first = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0.3)
    r = await kv.put("n/new", b"2")
    ev = await asyncio.wait_for(first, 10)
    assert ev.kv.key == "n/new" and ev.revision == r
    await events.aclose()


async def test_watch_all_keys_with_empty_prefix(kv: KeyValueStore) -> None:
    start = await kv.current_revision() + 1
    events = kv.watch("", start)
    await kv.batch_write([PutOp("x", b"1"), PutOp("y", b"2")])
    got = await take(events, 2)
    assert [e.kv.key for e in got] == ["x", "y"] and got[0].revision == got[1].revision
    await events.aclose()


async def test_watch_resume_from_next_revision_has_no_gaps_or_duplicates(kv: KeyValueStore) -> None:
    start = await kv.current_revision() + 1
    written = [await kv.put(f"res/{i}", str(i).encode()) for i in range(5)]
    events = kv.watch("res/", start)
    got = await take(events, 3)
    await events.aclose()
    written += [await kv.put(f"res/{i}", str(i).encode()) for i in range(5, 8)]
    resumed = kv.watch("res/", got[-1].revision + 1)
    got += await take(resumed, 5)
    assert [e.revision for e in got] == written
    assert await nothing_more(resumed)
    await resumed.aclose()


async def test_many_concurrent_writes_reach_a_watcher_in_order(kv: KeyValueStore) -> None:
    start = await kv.current_revision() + 1
    events = kv.watch("m/", start)
    revs = await asyncio.gather(*(kv.put(f"m/{i}", b"v") for i in range(200)))
    got = await take(events, 200)
    assert [e.revision for e in got] == sorted(revs)
    await events.aclose()


async def test_watch_from_compacted_revision_is_compacted(kv: KeyValueStore) -> None:
    r1 = await kv.put("c/a", b"1")
    await kv.put("c/a", b"2")
    r3 = await kv.put("c/a", b"3")
    await kv.compact(r3)
    events = kv.watch("c/", r1)
    err = await expect(ErrorCode.COMPACTED, anext(events))
    assert "compact" in err.message.lower()
    ok = kv.watch("c/", r3)
    (ev,) = await take(ok, 1)
    assert ev.revision == r3 and ev.kv.value == b"3"
    await ok.aclose()


async def test_closing_a_watch_stops_it(kv: KeyValueStore) -> None:
    events = kv.watch("s/", await kv.current_revision() + 1)
    pending = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0.2)
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    await events.aclose()
    with pytest.raises(StopAsyncIteration):
        await anext(events)
    await kv.put("s/x", b"1")  # the store keeps working
    assert (await kv.get("s/x")).value == b"1"


# --- bad input: every call rejects it with the same code ----------------------------

BAD_KEYS = [
    ("", ErrorCode.INVALID_KEY),
    (None, ErrorCode.INVALID_KEY),
    (b"bytes", ErrorCode.INVALID_KEY),
    (7, ErrorCode.INVALID_KEY),
    ("k" * 1025, ErrorCode.KEY_TOO_LARGE),
    ("é" * 513, ErrorCode.KEY_TOO_LARGE),
]


@pytest.mark.parametrize("key, code", BAD_KEYS)
async def test_bad_keys_are_rejected_by_every_call(kv: KeyValueStore, key: object, code: str) -> None:
    calls = [
        kv.get(key),
        kv.put(key, b"v"),
        kv.delete(key),
        kv.compare_and_swap(key, None, b"v"),
        kv.compare_and_delete(key, b"v"),
        kv.batch_read(["ok", key]),
        kv.batch_write([PutOp("ok", b"v"), PutOp(key, b"v")]),  # type: ignore[arg-type]
        kv.batch_write([DeleteOp(key)]),  # type: ignore[arg-type]
        kv.transaction([Compare(key, "version", "==", 0)]),  # type: ignore[arg-type]
        kv.transaction([], [GetOp(key)]),  # type: ignore[arg-type]
        kv.transaction([], [], [PutOp(key, b"v")]),  # type: ignore[arg-type]
    ]
    for call in calls:
        await expect(code, call)
    await expect(code, kv.delete_prefix(key))
    if key is not None:  # None means "unbounded" for scan
        if key:  # and so does the empty prefix
            await expect(code, kv.scan(key))
        await expect(code, kv.scan(start=key))
        await expect(code, kv.scan(end=key))
    assert (await kv.scan()).entries == []


async def test_empty_prefix_delete_is_refused(kv: KeyValueStore) -> None:
    await kv.put("k", b"v")
    await expect(ErrorCode.INVALID_KEY, kv.delete_prefix(""))
    await expect(ErrorCode.INVALID_KEY, kv.batch_write([DeleteOp("", prefix=True)]))
    assert await kv.get("k") is not None


async def test_bad_watch_arguments(kv: KeyValueStore) -> None:
    for prefix, start, code in [
        (5, None, ErrorCode.INVALID_KEY),
        ("k" * 1025, None, ErrorCode.KEY_TOO_LARGE),
        ("p", 0, ErrorCode.INVALID_ARGUMENT),
        ("p", -3, ErrorCode.INVALID_ARGUMENT),
        ("p", "1", ErrorCode.INVALID_ARGUMENT),
    ]:
        with pytest.raises(AspenError) as info:
            await anext(kv.watch(prefix, start))  # type: ignore[arg-type]
        assert info.value.code == code


@pytest.mark.parametrize("value", [b"x" * (MiB + 1), bytearray(MiB + 1)])
async def test_value_too_large(kv: KeyValueStore, value: bytes) -> None:
    for call in [
        kv.put("k", value),
        kv.compare_and_swap("k", None, value),
        kv.compare_and_swap("k", value, b"v"),
        kv.batch_write([PutOp("k", value)]),  # type: ignore[arg-type]
        kv.transaction([], [PutOp("k", value)]),  # type: ignore[arg-type]
    ]:
        await expect(ErrorCode.VALUE_TOO_LARGE, call)
    assert await kv.get("k") is None


async def test_values_must_be_bytes(kv: KeyValueStore) -> None:
    await expect(ErrorCode.INVALID_ARGUMENT, kv.put("k", "text"))  # type: ignore[arg-type]
    await expect(ErrorCode.INVALID_ARGUMENT, kv.compare_and_swap("k", None, 5))  # type: ignore[arg-type]


async def test_too_many_operations(kv: KeyValueStore) -> None:
    ops = [PutOp(f"k{i}", b"") for i in range(1001)]
    await expect(ErrorCode.TOO_MANY_OPERATIONS, kv.batch_write(ops))
    await expect(ErrorCode.TOO_MANY_OPERATIONS, kv.batch_read([f"k{i}" for i in range(1001)]))
    await expect(ErrorCode.TOO_MANY_OPERATIONS, kv.transaction([], ops))
    compares = [Compare(f"k{i}", "version", "==", 0) for i in range(600)]
    await expect(ErrorCode.TOO_MANY_OPERATIONS, kv.transaction(compares, ops[:300], ops[300:500]))
    await expect(ErrorCode.TOO_MANY_OPERATIONS, kv.transaction([], [RangeOp("k", limit=10_001)]))
    assert await kv.current_revision() >= 0 and (await kv.scan()).entries == []
    assert await kv.batch_write(ops[:1000]) > 0  # exactly the limit is fine


@pytest.mark.parametrize("token", ["", "!!!!", "abc", "%%%", 17])
async def test_invalid_continuation(kv: KeyValueStore, token: object) -> None:
    await kv.put("k", b"v")
    await expect(ErrorCode.INVALID_CONTINUATION, kv.scan("k", continuation=token))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "compare",
    [
        Compare("k", "value", "==", 5),
        Compare("k", "version", "==", b"1"),
        Compare("k", "version", "==", True),
        Compare("k", "exists", ">", True),
        Compare("k", "exists", "==", 1),
        Compare("k", "bogus", "==", 1),  # type: ignore[arg-type]
        Compare("k", "version", "<=", 1),  # type: ignore[arg-type]
    ],
)
async def test_bad_compares(kv: KeyValueStore, compare: Compare) -> None:
    await expect(ErrorCode.INVALID_ARGUMENT, kv.transaction([compare], [PutOp("x", b"1")]))
    assert await kv.get("x") is None


@pytest.mark.parametrize("lease", [-1, "1", 1 << 63, 2.0])
async def test_bad_lease_ids(kv: KeyValueStore, lease: object) -> None:
    await expect(ErrorCode.INVALID_ARGUMENT, kv.put("k", b"v", lease=lease))  # type: ignore[arg-type]
    await expect(ErrorCode.INVALID_ARGUMENT, kv.lease_grant(10, lease_id=lease))  # type: ignore[arg-type]
    await expect(ErrorCode.INVALID_ARGUMENT, kv.lease_keepalive(lease))  # type: ignore[arg-type]


async def test_closed_store_refuses_work(kv: KeyValueStore) -> None:
    await kv.put("k", b"v")
    await kv.close()
    await expect(ErrorCode.STORE_CLOSED, kv.get("k"))
    await expect(ErrorCode.STORE_CLOSED, kv.put("k", b"v"))
