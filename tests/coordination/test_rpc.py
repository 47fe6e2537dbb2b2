"""The coordination RPCs on a real node: authorisation by name, ownership
per caller, hostile bodies, the CLI, and an election that survives its
leader's SIGKILL (on both backends)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import httpx
import pytest

from aspen.client import SyncClient
from aspen.coordination import requests as m
from aspen.errors import ErrorCode
from tests.node.node_process import ASPEN, NodeProcess


def rpc(node, type_: str, body: dict, token: str | None = None) -> dict:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{node.url}/v1/rpc", json={"type": type_, "body": body}, headers=headers, timeout=30).json()


def error(wire: dict) -> str | None:
    return wire["body"]["code"] if wire["type"] == "Error" else None


@pytest.fixture(scope="module")
def admin(node):
    with SyncClient(node.url) as client:
        yield client


def token(admin, subject: str, *rights: tuple[str, str]) -> str:
    body = {"rights": [{"operation": o, "resource": r} for o, r in rights], "ttl_seconds": 600, "subject": subject}
    return admin.call("TokenCreate", body)["token"]


def test_requests_are_authorised_by_kind_and_name(node, admin):
    alice = token(admin, "alice", ("coord", "lock/app-"))
    assert error(rpc(node, "LockTryAcquire", {"name": "app-1"})) == ErrorCode.UNAUTHENTICATED
    assert error(rpc(node, "LockTryAcquire", {"name": "app-1"}, alice)) is None
    assert error(rpc(node, "LockTryAcquire", {"name": "other"}, alice)) == ErrorCode.UNAUTHORIZED
    assert error(rpc(node, "CounterAdd", {"name": "app-1", "delta": 1}, alice)) == ErrorCode.UNAUTHORIZED
    kv_only = token(admin, "kv", ("kv:write", ""))
    assert error(rpc(node, "QueueEnqueue", {"name": "q", "payload": "eA=="}, kv_only)) == ErrorCode.UNAUTHORIZED
    # the key space underneath is the coordination layer's alone
    wire = rpc(node, "WriteKey", {"key": "__coord:lock:app-1", "value": "eA=="}, admin.token)
    assert error(wire) == ErrorCode.RESERVED_KEY


def test_a_lock_belongs_to_the_caller_that_took_it(node, admin):
    alice = token(admin, "alice", ("coord", "lock/shared"))
    bob = token(admin, "bob", ("coord", "lock/shared"))
    got = rpc(node, "LockAcquire", {"name": "shared", "holder": "alice's job", "ttl_seconds": 30}, alice)["body"][
        "lock"
    ]
    assert got["owner"] == "alice"
    busy = rpc(node, "LockTryAcquire", {"name": "shared"}, bob)["body"]
    assert busy["acquired"] is False and busy["lock"]["holder"] == "alice's job"
    for type_ in ("LockRelease", "LockRenew"):
        assert error(rpc(node, type_, {"name": "shared", "token": got["token"]}, bob)) == ErrorCode.LOCK_NOT_HELD
    assert error(rpc(node, "LockRelease", {"name": "shared", "token": got["token"]}, alice)) is None


def test_permits_and_candidacies_belong_to_their_caller(node, admin):
    alice = token(admin, "alice", ("coord", ""))
    bob = token(admin, "bob", ("coord", ""))
    permit = rpc(node, "SemaphoreAcquire", {"name": "s", "capacity": 2}, alice)["body"]["permit"]
    assert (
        error(rpc(node, "SemaphoreRelease", {"name": "s", "permit_id": permit["permit_id"]}, bob))
        == ErrorCode.SEMAPHORE_NOT_HELD
    )
    leader = rpc(node, "ElectionCampaign", {"name": "own", "ttl_seconds": 30}, alice)["body"]["leader"]
    assert (
        error(rpc(node, "ElectionResign", {"name": "own", "lease_id": leader["lease_id"]}, bob))
        == ErrorCode.ELECTION_NOT_LEADER
    )
    assert error(rpc(node, "ElectionResign", {"name": "own", "lease_id": leader["lease_id"]}, alice)) is None
    entered = rpc(node, "BarrierEnter", {"name": "solo", "count": 1}, alice)["body"]["barrier"]
    leave = {"name": "solo", "participant_id": entered["participant_id"]}
    assert error(rpc(node, "BarrierLeave", leave, bob)) == ErrorCode.BARRIER_NOT_ENTERED
    assert error(rpc(node, "BarrierLeave", leave, alice)) is None


@pytest.mark.parametrize(
    ("type_", "body", "expected"),
    [
        ("LockAcquire", {}, ErrorCode.VALIDATION_ERROR),
        ("LockAcquire", {"name": 5}, ErrorCode.VALIDATION_ERROR),
        ("LockAcquire", {"name": "x", "ttl_seconds": "ten"}, ErrorCode.VALIDATION_ERROR),
        ("LockAcquire", {"name": "x", "ttl_seconds": 10**6}, ErrorCode.COORD_TTL_OUT_OF_RANGE),
        ("LockAcquire", {"name": "x", "timeout_seconds": 1e9}, ErrorCode.COORD_WAIT_OUT_OF_RANGE),
        ("LockAcquire", {"name": "x" * 5000}, ErrorCode.COORD_NAME_INVALID),
        ("LockAcquire", {"name": "x", "holder": "h" * 5000}, ErrorCode.COORD_NAME_INVALID),
        ("CounterAdd", {"name": "c", "delta": 1 << 70}, ErrorCode.COUNTER_OVERFLOW),
        ("SemaphoreAcquire", {"name": "s2", "capacity": 0}, ErrorCode.SEMAPHORE_PERMITS_OUT_OF_RANGE),
        ("QueueEnqueueBatch", {"name": "q", "items": [{"payload": ""}] * 101}, ErrorCode.QUEUE_BATCH_TOO_LARGE),
        ("QueueEnqueue", {"name": "q", "payload": "not base64!"}, ErrorCode.VALIDATION_ERROR),
        ("QueueEnqueue", {"name": "q", "payload": "", "group_id": {"a": [[[[[[]]]]]]}}, ErrorCode.VALIDATION_ERROR),
        ("QueueAck", {"name": "q", "receipt": "1:nope"}, ErrorCode.QUEUE_RECEIPT_INVALID),
        ("QueueStatus", {"name": "nosuch"}, ErrorCode.QUEUE_NOT_FOUND),
        ("RateLimiterTryAcquire", {"name": "r", "capacity": -1, "refill_per_second": 1}, ErrorCode.RATE_LIMIT_INVALID),
        ("SequenceReserve", {"name": "s", "count": 10**7}, ErrorCode.SEQUENCE_BATCH_OUT_OF_RANGE),
        ("BarrierEnter", {"name": "b", "count": 0}, ErrorCode.BARRIER_COUNT_OUT_OF_RANGE),
        ("RWLockReleaseWrite", {"name": "rw", "token": 1}, ErrorCode.LOCK_NOT_HELD),
        ("RWLockAcquireRead", {"name": "rw", "ttl_seconds": 0}, ErrorCode.COORD_TTL_OUT_OF_RANGE),
        ("BarrierLeave", {"name": "b", "participant_id": 12345}, ErrorCode.BARRIER_NOT_ENTERED),
    ],
)
def test_bad_bodies_get_their_own_code(node, admin, type_, body, expected):
    assert error(rpc(node, type_, body, admin.token)) == expected


def test_deeply_nested_and_oversized_bodies_are_refused(node, admin):
    nested: list = []
    for _ in range(200):
        nested = [nested]
    assert error(rpc(node, "QueueEnqueue", {"name": "q", "payload": "", "dedup_id": nested}, admin.token)) is not None
    big = "A" * (4 << 20)
    wire = httpx.post(f"{node.url}/v1/rpc", json={"type": "QueueEnqueue", "body": {"name": "q", "payload": big}},
                      headers={"authorization": f"Bearer {admin.token}"}, timeout=30).json()  # fmt: skip
    assert wire["body"]["code"] in (ErrorCode.MESSAGE_TOO_LARGE, ErrorCode.QUEUE_PAYLOAD_TOO_LARGE)


def test_the_cli_takes_and_releases_a_lock(node):
    def aspen(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [ASPEN, *args, "--url", node.url], check=False, capture_output=True, text=True, timeout=60
        )

    took = aspen("lock", "acquire", "cli-lock", "--ttl", "30", "--json")
    assert took.returncode == 0, took.stderr
    tok = str(__import__("json").loads(took.stdout)["lock"]["token"])
    busy = aspen("lock", "acquire", "cli-lock", "--try")
    assert busy.returncode == 1
    assert aspen("lock", "release", "cli-lock", tok).returncode == 0
    again = aspen("lock", "release", "cli-lock", tok)
    assert again.returncode == 1 and "LOCK_NOT_HELD" in again.stderr
    assert aspen("counter", "add", "cli-c", "3").stdout.strip() == "3"
    assert aspen("queue", "enqueue", "cli-q", "hello").returncode == 0
    got = aspen("queue", "dequeue", "cli-q")
    receipt, payload = got.stdout.strip().split("\t")
    assert payload == "hello" and aspen("queue", "ack", "cli-q", receipt).returncode == 0


LEADER = textwrap.dedent(
    """
    import sys, time
    from aspen.client import SyncClient
    from aspen.coordination import requests as m
    with SyncClient(sys.argv[1]) as c:
        lead = c.coord(m.ElectionCampaign(name=sys.argv[2], candidate="first", ttl_seconds=2)).leader
        print(lead.lease_id, flush=True)
        while True:
            c.coord(m.ElectionRenew(name=sys.argv[2], lease_id=lead.lease_id))
            time.sleep(0.5)
    """
)


def test_election_survives_the_leaders_sigkill_within_its_ttl(node, admin):
    name = f"kill-{time.monotonic_ns()}"
    leader = subprocess.Popen([sys.executable, "-c", LEADER, node.url, name], stdout=subprocess.PIPE, text=True)
    try:
        first_lease = int(leader.stdout.readline())
        time.sleep(3)  # it renews: still the leader after longer than its TTL
        assert admin.coord(m.ElectionLeader(name=name)).leader.lease_id == first_lease
        leader.send_signal(signal.SIGKILL)
        leader.wait()
        killed = time.monotonic()
        won = admin.coord(m.ElectionCampaign(name=name, candidate="second", ttl_seconds=10, timeout_seconds=20)).leader
        took = time.monotonic() - killed
    finally:
        leader.kill()
        leader.wait()
    assert won.candidate == "second" and won.lease_id != first_lease
    assert took < 2 + 1.5, f"the new leader took over after {took:.1f}s (TTL 2s)"


def test_holdings_count_against_the_callers_lease_quota(tmp_path):
    (tmp_path / "aspen.toml").write_text("[quotas]\nleases_per_caller = 2\n")
    with (
        NodeProcess(tmp_path / "data", "--config", str(tmp_path / "aspen.toml")) as tight,
        SyncClient(tight.url) as admin,
    ):
        carol = token(admin, "carol", ("coord", ""), ("lease", "*"))
        assert error(rpc(tight, "LockAcquire", {"name": "q1"}, carol)) is None
        permit = rpc(tight, "SemaphoreTryAcquire", {"name": "q2", "capacity": 5}, carol)["body"]["permit"]
        over = rpc(tight, "LockTryAcquire", {"name": "q3"}, carol)
        assert error(over) == ErrorCode.QUOTA_EXCEEDED and over["body"]["details"]["quota"] == "leases_per_caller"
        assert len(rpc(tight, "LeaseList", {}, carol)["body"]["leases"]) == 2  # they are carol's leases
        rpc(tight, "SemaphoreRelease", {"name": "q2", "permit_id": permit["permit_id"]}, carol)
        assert error(rpc(tight, "LockTryAcquire", {"name": "q3"}, carol)) is None
