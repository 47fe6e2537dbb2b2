"""The front door is the only validator: every backend behind it rejects the
same bad input with the same code before the backend is reached, and a
backend called directly checks nothing."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

import pytest

from aspen.errors import AspenError, ErrorCode
from aspen.storage import etcd, etcd_convert, limits, sqlite, sqlite_ops
from aspen.storage.front_door import KvFrontDoor
from aspen.storage.limits import MAX_KEY_BYTES, MAX_VALUE_BYTES
from aspen.storage.protocol import KeyValueStore
from aspen.storage.records import Compare, DeleteOp, GetOp, PutOp, RangeOp

TOO_MANY = [PutOp(f"k{i}", b"v") for i in range(limits.MAX_OPERATIONS + 1)]

# (what, call on a KeyValueStore, the code every backend answers with)
BAD_CALLS: list[tuple[str, Any, str]] = [
    ("get empty key", lambda kv: kv.get(""), ErrorCode.INVALID_KEY),
    ("get long key", lambda kv: kv.get("k" * (MAX_KEY_BYTES + 1)), ErrorCode.KEY_TOO_LARGE),
    ("put text value", lambda kv: kv.put("k", "text"), ErrorCode.INVALID_ARGUMENT),
    ("put big value", lambda kv: kv.put("k", b"v" * (MAX_VALUE_BYTES + 1)), ErrorCode.VALUE_TOO_LARGE),
    ("put lease -1", lambda kv: kv.put("k", b"v", lease=-1), ErrorCode.INVALID_ARGUMENT),
    ("delete bytes key", lambda kv: kv.delete(b"k"), ErrorCode.INVALID_KEY),
    ("delete_prefix empty", lambda kv: kv.delete_prefix(""), ErrorCode.INVALID_KEY),
    ("scan limit 0", lambda kv: kv.scan("p", limit=0), ErrorCode.INVALID_ARGUMENT),
    ("scan limit huge", lambda kv: kv.scan("p", limit=limits.MAX_SCAN_LIMIT + 1), ErrorCode.TOO_MANY_OPERATIONS),
    ("scan bad token", lambda kv: kv.scan("p", continuation="!!"), ErrorCode.INVALID_CONTINUATION),
    ("cas big new", lambda kv: kv.compare_and_swap("k", None, b"v" * (MAX_VALUE_BYTES + 1)), ErrorCode.VALUE_TOO_LARGE),
    ("cad text expected", lambda kv: kv.compare_and_delete("k", "v"), ErrorCode.INVALID_ARGUMENT),
    ("batch_read 1001", lambda kv: kv.batch_read([f"k{i}" for i in range(1001)]), ErrorCode.TOO_MANY_OPERATIONS),
    ("batch_write 1001", lambda kv: kv.batch_write(TOO_MANY), ErrorCode.TOO_MANY_OPERATIONS),
    ("batch_write twice", lambda kv: kv.batch_write([PutOp("k", b"1"), PutOp("k", b"2")]), ErrorCode.INVALID_ARGUMENT),
    ("batch_write a get", lambda kv: kv.batch_write([GetOp("k")]), ErrorCode.INVALID_ARGUMENT),
    ("batch_write empty prefix", lambda kv: kv.batch_write([DeleteOp("", prefix=True)]), ErrorCode.INVALID_KEY),
    ("txn bad target", lambda kv: kv.transaction([Compare("k", "colour", "==", b"")]), ErrorCode.INVALID_ARGUMENT),
    ("txn bad range", lambda kv: kv.transaction([], [RangeOp("p", limit=0)]), ErrorCode.INVALID_ARGUMENT),
    ("txn put in deleted prefix", lambda kv: kv.transaction([], [], [DeleteOp("p", prefix=True), PutOp("p1", b"")]),
     ErrorCode.INVALID_ARGUMENT),
    ("txn unknown op", lambda kv: kv.transaction([], ["put"]), ErrorCode.INVALID_ARGUMENT),
    ("compact 0", lambda kv: kv.compact(0), ErrorCode.INVALID_ARGUMENT),
    ("lease ttl 0", lambda kv: kv.lease_grant(0), ErrorCode.INVALID_ARGUMENT),
    ("lease id 2**63", lambda kv: kv.lease_keepalive(1 << 63), ErrorCode.INVALID_ARGUMENT),
    ("lease id 0 revoke", lambda kv: kv.lease_revoke(0), ErrorCode.INVALID_ARGUMENT),
    ("lease ttl of True", lambda kv: kv.lease_time_to_live(True), ErrorCode.INVALID_ARGUMENT),
]  # fmt: skip


class Recorder:
    """A backend stand-in that records every attribute the front door touches."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.touched: list[str] = []

    def __getattr__(self, name: str) -> Any:
        self.touched.append(name)
        return getattr(self.backend, name)


@pytest.mark.parametrize("what,call,code", BAD_CALLS, ids=[b[0] for b in BAD_CALLS])
async def test_bad_input_is_refused_at_the_door_with_one_code(kv: KvFrontDoor, what: str, call: Any, code: str) -> None:
    recorder = Recorder(kv.backend)
    door = KvFrontDoor(recorder)
    recorder.touched.clear()  # binding the hot-path get at construction is not a call
    with pytest.raises(AspenError) as info:
        await call(door)
    assert info.value.code == code, info.value
    assert recorder.touched == [], f"{what}: the backend was reached: {recorder.touched}"


async def test_bad_watch_arguments_are_refused_at_the_door(kv: KvFrontDoor) -> None:
    recorder = Recorder(kv.backend)
    door = KvFrontDoor(recorder)
    recorder.touched.clear()
    for prefix, start, code in [(5, None, ErrorCode.INVALID_KEY), ("p", 0, ErrorCode.INVALID_ARGUMENT),
                                ("p", 1 << 63, ErrorCode.INVALID_ARGUMENT)]:  # fmt: skip
        with pytest.raises(AspenError) as info:
            door.watch(prefix, start)
        assert info.value.code == code
    assert recorder.touched == []


async def test_a_raw_backend_checks_nothing(kv: KvFrontDoor) -> None:
    """What the door refuses, the backend stores: the checks live only in the door."""
    long_key = b"k" * (MAX_KEY_BYTES + 1)
    big = b"v" * (MAX_VALUE_BYTES + 1)
    await kv.backend.put(long_key, big, 0)
    assert (await kv.backend.get(long_key)).value == big
    with pytest.raises(AspenError) as info:
        await kv.get(long_key.decode())
    assert info.value.code == ErrorCode.KEY_TOO_LARGE
    with pytest.raises(AspenError) as info:
        await kv.put("k", big)
    assert info.value.code == ErrorCode.VALUE_TOO_LARGE


def _names_used(module: Any) -> set[str]:
    tree = ast.parse(Path(inspect.getfile(module)).read_text())
    return {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)} | {
        n.id for n in ast.walk(tree) if isinstance(n, ast.Name)
    }


@pytest.mark.parametrize("module", [sqlite, sqlite_ops, etcd, etcd_convert], ids=lambda m: m.__name__)
def test_backends_do_not_validate_requests(module: Any) -> None:
    checks = {name for name in vars(limits) if name.startswith("check_") or name == "scan_bounds"}
    assert not checks & _names_used(module)


def test_the_door_offers_the_whole_protocol() -> None:
    wanted = {name for name in dir(KeyValueStore) if not name.startswith("_")}
    assert wanted <= set(dir(KvFrontDoor))
    assert issubclass(sqlite.SqliteKeyValueStore, KvFrontDoor) and issubclass(etcd.EtcdKeyValueStore, KvFrontDoor)
