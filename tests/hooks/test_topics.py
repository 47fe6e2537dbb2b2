"""Hook patterns (NATS-style) and the topic of each committed change."""

from __future__ import annotations

import msgspec
import pytest

from aspen.errors import AspenError, ErrorCode
from aspen.hooks.topics import MAX_PATTERN_BYTES, check_pattern, hook_event, matches
from aspen.storage.records import KeyValue, WatchEvent


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("hooks.kv.write_committed", "hooks.kv.write_committed", True),
        ("hooks.kv.write_committed", "hooks.kv.delete_committed", False),
        ("hooks.kv.*", "hooks.kv.write_committed", True),
        ("hooks.*", "hooks.kv.write_committed", False),
        ("hooks.*.write_committed", "hooks.kv.write_committed", True),
        ("hooks.>", "hooks.kv.write_committed", True),
        ("hooks.>", "hooks", True),
        ("hooks.kv.>", "hooks.kv", True),
        ("hooks.kv.>", "hooks.job.running", False),
        ("hooks.kv.>", "hooks", False),
        (">", "hooks.cluster.node_joined", True),
        ("*", "hooks", True),
        ("*", "hooks.kv", False),
        ("hooks.kv", "hooks.kv.write_committed", False),
        ("hooks.kv.write_committed.x", "hooks.kv.write_committed", False),
        ("hooks.job.*", "hooks.job.failed", True),
    ],
)
def test_matching(pattern, topic, expected):
    assert matches(check_pattern(pattern), topic) is expected


@pytest.mark.parametrize(
    "pattern",
    ["", ".", "hooks.", ".hooks", "hooks..kv", "hooks.>.kv", "hooks.k*", "hooks.>>", "hooks.a b", "hooks.\x00",
     "x" * (MAX_PATTERN_BYTES + 1), 7, None, ["hooks.>"], {"p": 1}, True],
)  # fmt: skip
def test_bad_patterns_have_one_code(pattern):
    with pytest.raises(AspenError) as err:
        check_pattern(pattern)
    assert err.value.code == ErrorCode.HOOK_PATTERN_INVALID


def test_the_longest_pattern_is_accepted():
    assert check_pattern("a." * 127 + "bc") == "a." * 127 + "bc"


def change(kind: str, key: str, value: bytes = b"", version: int = 1, revision: int = 9) -> WatchEvent:
    return WatchEvent(kind, KeyValue(key, value, version, revision, revision), revision)


def test_topics_of_changes():
    put = hook_event(change("put", "orders:1", b"v"))
    assert put.topic == "hooks.kv.write_committed" and put.value == b"v" and put.key == "orders:1"
    assert put.event == {"key": "orders:1", "revision": 9, "version": 1}  # the value is added per subscriber
    assert hook_event(change("delete", "orders:1")).topic == "hooks.kv.delete_committed"
    record = msgspec.json.encode({"manifest": {"name": "p", "version": "1.2.3", "enabled": False}, "generation": 2})
    assert hook_event(change("put", "__plugins:manifests:p", record)).event == {
        "name": "p", "version": "1.2.3", "enabled": False, "revision": 9}  # fmt: skip
    assert hook_event(change("put", "__plugins:manifests:p", record, version=2)).topic == "hooks.plugin.updated"
    assert hook_event(change("put", "__plugins:manifests:p", record)).topic == "hooks.plugin.installed"
    assert hook_event(change("delete", "__plugins:manifests:p")).topic == "hooks.plugin.removed"
    status = hook_event(change("put", "__plugins:status:p:node-a", b'{"state": "ready"}'))
    assert (status.topic, status.event["node_id"], status.event["state"]) == (
        "hooks.plugin.state_changed",
        "node-a",
        "ready",
    )
    job = hook_event(change("put", "__jobs:state:running:j1", b"shell"))
    assert job.topic == "hooks.job.running" and job.event == {
        "job_id": "j1",
        "job_type": "shell",
        "state": "running",
        "revision": 9,
    }
    assert hook_event(change("put", "__cluster:nodes:n1", b"{}")).topic == "hooks.cluster.node_joined"
    assert hook_event(change("put", "__cluster:nodes:n1", b"{}", version=5)) is None  # a refresh, not a join
    assert hook_event(change("delete", "__cluster:nodes:n1")).topic == "hooks.cluster.node_left"


@pytest.mark.parametrize(
    "key",
    ["__auth:secret:root", "__federation:secret:key", "__auth:tokens:x", "__jobs:job:j1", "__jobs:claim:j1",
     "__plugins:hooks:cursor:p", "__plugins:trust:k", "__cluster:duty:plugin-hooks", "__coord:lock:x"],
)  # fmt: skip
def test_reserved_values_are_never_a_topic(key):
    assert hook_event(change("put", key, b"secret")) is None
    assert hook_event(change("delete", key)) is None or not hook_event(change("delete", key)).value


def test_a_garbled_record_gives_a_summary_without_its_bytes():
    hook = hook_event(change("put", "__plugins:status:p:n", b"\xff not json"))
    assert hook.value is None and hook.event["state"] == ""
