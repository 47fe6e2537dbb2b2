"""What only the embedded SQLite backend promises: acknowledged writes survive
a SIGKILL, two processes can share one file, history retention, reopening."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import textwrap
from pathlib import Path

import pytest

from aspen.errors import AspenError, ErrorCode
from aspen.storage import sqlite_ops
from aspen.storage.sqlite import SqliteKeyValueStore

REPO = Path(__file__).resolve().parents[2]

CRASH_WRITER = """
import asyncio, sys
from aspen.storage.sqlite import SqliteKeyValueStore

async def main(path):
    store = await SqliteKeyValueStore.open(path)
    async def writer(w):
        i = 0
        while True:
            key = f"w{w}/{i:06d}"
            await store.put(key, key.encode() * 20)
            sys.stdout.write(key + "\\n")
            sys.stdout.flush()
            i += 1
    await asyncio.gather(*(writer(w) for w in range(8)))

asyncio.run(main(sys.argv[1]))
"""

PEER = """
import asyncio, sys
from aspen.storage.sqlite import SqliteKeyValueStore

async def main(path, start, n):
    store = await SqliteKeyValueStore.open(path)
    seen = 0
    async def write():
        await asyncio.gather(*(store.put(f"child/{i:03d}", b"c") for i in range(n)))
    task = asyncio.ensure_future(write())
    async for event in store.watch("parent/", start):
        seen += 1
        if seen == n:
            break
    await task
    print(f"saw {seen}", flush=True)
    await store.close()

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


async def _spawn(tmp_path: Path, source: str, *args: str) -> asyncio.subprocess.Process:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(source))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return await asyncio.create_subprocess_exec(
        sys.executable, str(script), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )


def _integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


async def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "kv.db"
    proc = await _spawn(tmp_path, CRASH_WRITER, str(db))
    acked: list[str] = []
    try:
        while len(acked) < 400:
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line, (await proc.stderr.read()).decode()
            acked.append(line.decode().strip())
    finally:
        proc.send_signal(signal.SIGKILL)
    acked += (await proc.stdout.read()).decode().split()  # printed before the kill landed
    assert await proc.wait() == -signal.SIGKILL

    assert await asyncio.to_thread(_integrity, db) == "ok"
    store = await SqliteKeyValueStore.open(db)
    try:
        for i in range(0, len(acked), 1000):
            chunk = acked[i : i + 1000]
            found = await store.batch_read(chunk)
            missing = [k for k, kv in zip(chunk, found) if kv is None]
            assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:3]}"
            assert all(kv.value == kv.key.encode() * 20 for kv in found)
        revs = [kv.mod_revision for kv in (await store.scan(limit=10_000)).entries]
        assert len(revs) == len(set(revs))  # one revision per put, none reused
        assert await store.put("after", b"crash") > max(revs)
    finally:
        await store.close()


async def test_two_processes_share_one_file(tmp_path: Path) -> None:
    db = tmp_path / "kv.db"
    n = 40
    store = await SqliteKeyValueStore.open(db)
    try:
        start = await store.current_revision() + 1
        child_events = store.watch("child/", start)
        proc = await _spawn(tmp_path, PEER, str(db), str(start), str(n))
        mine = await asyncio.gather(*(store.put(f"parent/{i:03d}", b"p") for i in range(n)))
        got = [await asyncio.wait_for(anext(child_events), 30) for _ in range(n)]
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        assert out.decode().strip() == f"saw {n}"  # the child watched our writes
        await child_events.aclose()

        assert sorted(e.kv.key for e in got) == [f"child/{i:03d}" for i in range(n)]
        theirs = [e.revision for e in got]
        assert theirs == sorted(theirs)
        # both processes allocated revisions from one counter: no clash, no gap
        assert sorted(mine + theirs) == list(range(start, start + 2 * n))
        assert await store.current_revision() == start + 2 * n - 1
        assert len((await store.scan("child/")).entries) == n
    finally:
        await store.close()
    assert await asyncio.to_thread(_integrity, db) == "ok"


async def test_data_revision_and_leases_survive_reopen(tmp_path: Path) -> None:
    db = tmp_path / "kv.db"
    store = await SqliteKeyValueStore.open(db)
    lease = await store.lease_grant(300)
    await store.put("a", b"1", lease=lease.id)
    rev = await store.put("a", b"2", lease=lease.id)
    await store.close()
    store = await SqliteKeyValueStore.open(db)
    try:
        kv = await store.get("a")
        assert (kv.value, kv.version, kv.mod_revision, kv.lease) == (b"2", 2, rev, lease.id)
        assert await store.current_revision() == rev
        assert (await store.lease_time_to_live(lease.id)).keys == ["a"]
        assert await store.put("b", b"") == rev + 1
        assert [e.revision for e in [await anext(store.watch("", rev))]] == [rev]
    finally:
        await store.close()


async def test_history_beyond_retention_is_compacted(tmp_path: Path) -> None:
    store = await SqliteKeyValueStore.open(tmp_path / "kv.db", event_retention=10)
    try:
        revs = [await store.put(f"k{i}", b"v") for i in range(30)]
        with pytest.raises(AspenError) as info:
            await anext(store.watch("", revs[0]))
        assert info.value.code == ErrorCode.COMPACTED
        recent = store.watch("", revs[-10])
        assert [(await anext(recent)).revision for _ in range(10)] == revs[-10:]
        await recent.aclose()
    finally:
        await store.close()


async def test_watcher_that_falls_behind_compaction_gets_compacted_not_a_gap(tmp_path: Path) -> None:
    store = await SqliteKeyValueStore.open(tmp_path / "kv.db", event_retention=10)
    try:
        first = await store.put("k", b"0")
        events = store.watch("", first)
        assert (await anext(events)).revision == first
        for i in range(40):
            await store.put("k", str(i).encode())
        with pytest.raises(AspenError) as info:
            while True:  # whatever was fetched before compaction may still arrive, then the error
                await asyncio.wait_for(anext(events), 10)
        assert info.value.code == ErrorCode.COMPACTED
    finally:
        await store.close()


async def test_watch_ends_with_store_closed(tmp_path: Path) -> None:
    store = await SqliteKeyValueStore.open(tmp_path / "kv.db")
    events = store.watch("", 1)
    pending = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0.1)
    await store.close()
    with pytest.raises(AspenError) as info:
        await asyncio.wait_for(pending, 5)
    assert info.value.code == ErrorCode.STORE_CLOSED


async def test_non_durable_mode_and_bad_open_arguments(tmp_path: Path) -> None:
    store = await SqliteKeyValueStore.open(tmp_path / "fast.db", durable=False)
    try:
        assert (await store.get("k")) is None
        await store.put("k", b"v")
        assert (await store.get("k")).value == b"v"
    finally:
        await store.close()
    with pytest.raises(AspenError) as info:
        await SqliteKeyValueStore.open(tmp_path / "x.db", event_retention=0)
    assert info.value.code == ErrorCode.INVALID_ARGUMENT
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(AspenError) as info:
        await SqliteKeyValueStore.open(tmp_path / "dir.db")
    assert info.value.code == ErrorCode.STORAGE_UNAVAILABLE


async def test_concurrent_reads_are_merged_and_each_gets_its_own_answer(tmp_path: Path) -> None:
    """Concurrent gets share one IN query per drained group; every caller still
    gets its own entry (or None), and a failing read in the same group fails alone."""
    from aspen.storage.records import PutOp

    store = await SqliteKeyValueStore.open(tmp_path / "kv.db", durable=False)
    try:
        keys = [f"k/{i:04d}" for i in range(600)] + ["k/é", "k/日本"]
        for start in range(0, len(keys), 500):
            await store.batch_write([PutOp(k, k.encode()) for k in keys[start : start + 500]])
        asked = keys + [f"missing/{i}" for i in range(100)] + keys[:50]  # more than one group, with repeats
        statements: list[str] = []
        store.backend._reader._conn.set_trace_callback(statements.append)
        got = await asyncio.gather(
            *(store.get(k) for k in asked),
            store.lease_time_to_live(12345),
            store.scan("k/", limit=10),
            return_exceptions=True,
        )
        store.backend._reader._conn.set_trace_callback(None)
        *entries, lease_error, page = got
        for key, kv in zip(asked, entries):
            if key.startswith("missing/"):
                assert kv is None
            else:
                assert kv is not None and kv.key == key and kv.value == key.encode() and kv.version == 1
        assert isinstance(lease_error, AspenError) and lease_error.code == ErrorCode.LEASE_NOT_FOUND
        assert [kv.key for kv in page.entries] == keys[:10]
        point_reads = [s for s in statements if "FROM kv WHERE key" in s and "LIMIT" not in s]
        assert 1 <= len(point_reads) <= len(asked) // 8, len(point_reads)

        # batch_read crosses the 512-key statement chunk, keeps order, repeats and gaps
        wanted = keys[::-1] + ["missing/x"] + keys[:397]
        assert len(wanted) == 1000
        found = await store.batch_read(wanted)
        assert [kv.key if kv else None for kv in found] == [None if k.startswith("missing/") else k for k in wanted]
    finally:
        await store.close()


async def test_concurrent_puts_are_group_committed(tmp_path: Path) -> None:
    """On a durable store each commit is an fsync, so concurrent puts must share
    commits: 200 of them cost far fewer than 200, and each is still acknowledged
    with its own revision and readable. A lone put is exactly one commit."""
    store = await SqliteKeyValueStore.open(tmp_path / "kv.db", durable=True)
    commits: list[str] = []

    def trace(statement: str) -> None:
        if statement.strip().upper() == "COMMIT":
            commits.append(statement)

    conn = store.backend._writer._conn  # the writer's own connection: its COMMITs are the real ones
    try:
        conn.set_trace_callback(trace)
        first = await store.put("alone", b"1")
        assert len(commits) == 1

        commits.clear()
        n = 200
        keys = [f"g/{i:03d}" for i in range(n)]
        revisions = await asyncio.gather(*(store.put(k, k.encode()) for k in keys))
        conn.set_trace_callback(None)
        assert 1 <= len(commits) <= n // 10, len(commits)
        assert len(set(revisions)) == n and min(revisions) > first
        for key, revision, kv in zip(keys, revisions, await store.batch_read(keys)):
            assert kv is not None and kv.value == key.encode() and kv.mod_revision == revision
    finally:
        conn.set_trace_callback(None)
        await store.close()


async def test_idle_watchers_cost_one_small_read_per_poll_interval(tmp_path: Path, monkeypatch) -> None:
    """Another process's writes are found by one poller per store, not by
    every watcher reading the events table at every interval."""
    calls = {"read_events": 0, "read_revision": 0}
    for name in calls:
        real = getattr(sqlite_ops, name)

        def counted(*a, _real=real, _name=name):
            calls[_name] += 1
            return _real(*a)

        monkeypatch.setattr(sqlite_ops, name, counted)
    store = await SqliteKeyValueStore.open(tmp_path / "kv.db", watch_poll_interval=0.05)
    try:
        watches = [store.watch(f"w{i}/") for i in range(20)]
        waiting = [asyncio.ensure_future(anext(w)) for w in watches]
        for _ in range(200):  # each watcher makes its first read
            if calls["read_events"] >= len(watches):
                break
            await asyncio.sleep(0.01)
        before = dict(calls)
        await asyncio.sleep(1.0)
        assert calls["read_events"] == before["read_events"]  # no watcher read again
        assert 5 <= calls["read_revision"] - before["read_revision"] <= 25  # ~20 polls of one row
        await store.put("w7/x", b"1")  # a commit here still wakes the watcher at once
        assert (await asyncio.wait_for(waiting[7], 5)).kv.key == "w7/x"
        assert not any(t.done() for i, t in enumerate(waiting) if i != 7)
    finally:
        for t in waiting:
            t.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        for w in watches:
            await w.aclose()
        await store.close()
