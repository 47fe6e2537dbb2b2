"""Plugin timers on a real node process: the echo-process plugin's on_timer
fires for the repeating timer it schedules (EchoTimer), and keeps firing
after the node is SIGKILLed and restarted on the same data dir; the
scheduled-cleanup WASM plugin's repeating sweep deletes its expired entries
(also ones written after the first sweep) and keeps every other one."""

from __future__ import annotations

import json

from aspen.client import SyncClient
from aspen.clock import now_ms
from tests.hooks.real_nodes import PLUGINS, config, install, until
from tests.node.node_process import NodeProcess

FIRED = "__plugin:echo-process:fired:tick"


def fired(client: SyncClient) -> int:
    got = client.read_key(FIRED)
    return int(got.value) if got.was_found else 0


def test_a_process_plugin_timer_keeps_firing_across_a_sigkill(home):
    cfg = config(home, "solo")
    node = NodeProcess(home / "data", "--config", cfg, "--allow-unsigned-plugins")
    with node, SyncClient(node.url) as c:
        install(node, PLUGINS / "echo-process", home)
        assert c.call("EchoTimer", {"name": "tick", "interval_ms": 1000, "repeating": True})["next_fire_ms"] > 0
        before = until(lambda: (n := fired(c)) >= 2 and n, what="two firings")
        node.kill()  # SIGKILL: the dead node's duty lease runs out before the restarted node leads
    later = NodeProcess(home / "data", "--config", cfg, "--allow-unsigned-plugins")
    with later, SyncClient(later.url) as c:
        until(lambda: fired(c) >= before + 2, what="two firings after the restart")


def entry(expires_at_ms: int) -> bytes:
    return json.dumps({"expires_at_ms": expires_at_ms}).encode()


def test_scheduled_cleanup_deletes_expired_entries_and_keeps_live_ones(home, built):
    node = NodeProcess(home / "data", "--config", config(home, "solo"), "--allow-unsigned-plugins")
    with node, SyncClient(node.url) as c:
        install(node, built / "scheduled-cleanup", home)
        now = now_ms()
        kept = {
            "expiring:live": entry(now + 3_600_000),
            "expiring:plain": b"not json",
            "expiring:other": json.dumps({"expires": 1}).encode(),
            "elsewhere:old": entry(now - 1000),  # outside its prefix
        }
        for key, value in {**kept, "expiring:old": entry(now - 1000), "expiring:soon": entry(now + 1500)}.items():
            c.write_key(key, value)
        assert c.call("CleanupSchedule", {"interval_ms": 1000})["next_fire_ms"] > now

        def gone(*keys: str) -> bool:
            return not any(c.read_key(k).was_found for k in keys)

        until(lambda: gone("expiring:old", "expiring:soon"), what="the expired entries deleted")
        c.write_key("expiring:late", entry(now_ms()))  # expired after a sweep ran: the next one takes it
        until(lambda: gone("expiring:late"), what="a later sweep")
        assert {k: c.read_key(k).value for k in kept} == kept
