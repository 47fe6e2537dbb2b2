"""What becomes of an event, through real nodes: direct mode retries by the
hook's own ``retries``, spaced by its doubling backoff, then counts it
failed; a removed (or removed and re-added) hook's queued ``hook.action``
job acts no more; the node's ``/metrics`` counts delivered, failed and
dropped events in one closed set of series."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aspen.client import SyncClient
from aspen.storage.records import PutOp
from tests.hookapp.conftest import Receiver, until
from tests.hookapp.test_delivery import tagged


def webhook(url: str) -> dict[str, str]:
    return {"kind": "webhook", "target": url}


def counts(client: SyncClient, name: str) -> dict:
    return client.call("HookMetrics", {"name": name})["hooks"][0]


def gaps(receiver: Receiver) -> list[float]:
    return [b - a for a, b in zip(receiver.times, receiver.times[1:])]


def test_direct_mode_retries_by_the_hooks_own_policy(node, receiver):
    receiver.status = 500  # never recovers
    flaky = Receiver()
    flaky.fail_first = 2  # recovers at the third attempt
    try:
        with SyncClient(node.url) as c:
            c.call("HookAdd", {"name": "down", "prefix": "d/", "action": webhook(receiver.url), "retries": 2,
                               "backoff_ms": 200})  # fmt: skip
            c.call("HookAdd", {"name": "flaky", "prefix": "f/", "action": webhook(flaky.url), "retries": 3,
                               "backoff_ms": 200})  # fmt: skip
            c.write_key("d/1", b"x")
            c.write_key("f/1", b"x")
            down = until(lambda: (m := counts(c, "down"))["failed"] == 1 and m, what="down's event to fail")
            assert down["delivered"] == 0 and len(receiver.posts) == 3  # retries + 1
            assert down["last_error"].startswith("HOOK_DELIVERY_FAILED: ") and "answered 500" in down["last_error"]
            assert abs(down["last_error_ms"] - time.time() * 1000) < 60_000
            assert len({h["x-aspen-event-id"] for h, _ in receiver.posts}) == 1
            up = until(lambda: (m := counts(c, "flaky"))["delivered"] == 1 and m, what="flaky's event")
            assert up["failed"] == 0 and len(flaky.posts) == 3  # two 500s, then delivered: no fourth
            # The n-th retry waits 200 ms · 2^(n-1), less at most half of it (jitter).
            for r in (receiver, flaky):
                assert all(g >= 0.1 * 2**i - 0.03 for i, g in enumerate(gaps(r))), gaps(r)
            c.write_key("d/2", b"x")  # in order behind the first: the first had no attempt more
            until(lambda: counts(c, "down")["failed"] == 2, what="down's second event to fail")
            assert len(receiver.posts) == 6
            assert not tagged(c, "down")  # direct mode: no job, no dead letter, only the count
    finally:
        flaky.close()


def test_a_removed_hooks_queued_job_does_not_act(node, receiver):
    receiver.status = 500
    hook = {"name": "billing", "prefix": "bill/", "action": webhook(receiver.url), "mode": "job", "retries": 5,
            "backoff_ms": 3000}  # fmt: skip
    with SyncClient(node.url) as c:
        c.call("HookAdd", hook)
        c.write_key("bill/1", b"x")
        job = until(
            lambda: (j := tagged(c, "billing", state="retrying")) and j[0]["attempts"] == 1 and j[0],
            what="the first attempt to fail",
        )
        c.call("HookRemove", {"name": "billing"})
        c.call("HookAdd", hook)  # the same name and owner again: another hook, not the job's
        ended = until(
            lambda: (j := c.call("JobStatus", {"id": job["id"]})["job"])["state"] == "failed" and j,
            what="the job to end",
        )
        assert ended["error_code"] == "HOOK_NOT_FOUND" and "removed" in ended["error"]
        assert ended["attempts"] == 2
        assert len(receiver.posts) == 1  # its one attempt before the removal
        assert json.loads(receiver.posts[0][1])["event"]["key"] == "bill/1"


def scrape(node) -> dict[str, float]:
    text = httpx.get(f"{node.url}/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = families["aspen_hookapp_events"].samples
    return {s.labels["outcome"]: s.value for s in samples if s.name == "aspen_hookapp_events_total"}


@pytest.mark.parametrize(
    "node", ["sqlite"], indirect=True
)  # the counters are the delivering node's, whatever the store
def test_the_node_exports_the_hooks_counters(node, receiver):
    assert scrape(node) == {"delivered": 0, "failed": 0, "dropped": 0}  # every series, before any hook
    slow, bad = Receiver(), Receiver()
    slow.delay, bad.status = 5.0, 500
    try:
        with SyncClient(node.url) as c:
            c.call("HookAdd", {"name": "ok", "prefix": "ok/", "action": webhook(receiver.url)})
            c.call("HookAdd", {"name": "bad", "prefix": "bad/", "action": webhook(bad.url), "retries": 0})
            c.call("HookAdd", {"name": "slow", "prefix": "q/", "action": webhook(slow.url), "timeout_ms": 10_000})
            c.write_key("ok/1", b"x")
            c.write_key("bad/1", b"x")
            # The first event holds slow's lane for 5 s: 1 000 fill its queue, the next 1 000 are dropped.
            for batch in range(2):
                c.batch_write([PutOp(f"q/{batch}/{i:04}", b"v") for i in range(1000)])
            until(lambda: counts(c, "slow")["dropped"] == 1000, what="slow's drops")
            until(lambda: counts(c, "ok")["delivered"] == 1 and counts(c, "bad")["failed"] == 1)
            assert scrape(node) == {"delivered": 1, "failed": 1, "dropped": 1000}
            text = httpx.get(f"{node.url}/metrics").text
            assert not [
                line for line in text.splitlines() if "aspen_hookapp" in line and "slow" in line
            ]  # no hook label
            c.call("HookRemove", {"name": "slow"})
    finally:
        slow.close()
        bad.close()
