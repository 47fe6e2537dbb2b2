"""Hook events through a real node: process plugins receive on_hook_event
for their own prefixes only (a value only with kv_read), in order per key,
and plugin events; a slow one overflows into its drop counter and the hooks
metric without slowing writers; a bad pattern is refused with its code."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import httpx

from aspen.client import SyncClient
from tests.hooks.real_nodes import config, install, until
from tests.node.node_process import NodeProcess

PROBE = Path(__file__).with_name("probe")
REPO = Path(__file__).resolve().parents[2]


def probe(home: Path, name: str, type_: str, prefixes: list[str], patterns: str, *, read=True, sleep=0.0) -> Path:
    out = home / name
    out.mkdir()
    shutil.copy(PROBE / "plugin.py", out / "plugin.py")
    manifest = {
        "name": name, "version": "0.1.0", "handles": [f"{type_}Events", f"{type_}Call"], "kv_prefixes": prefixes,
        "permissions": {"kv_read": read, "hooks": True}, "runtime": "process", "command": ["python3", "plugin.py"],
        "env": {"PROBE_NAME": name, "PROBE_TYPE": type_, "PROBE_PATTERNS": patterns, "PROBE_SLEEP": str(sleep)},
    }  # fmt: skip
    (out / "plugin.json").write_text(json.dumps(manifest))
    return out


def kv_events(client: SyncClient, type_: str) -> list[dict]:
    got = client.call(f"{type_}Events", {})["events"]
    return [e["event"] for e in got if e["topic"].startswith("hooks.kv.")]


def test_process_plugins_receive_their_own_keys_and_a_slow_one_drops(home):
    cfg = config(home, "solo", "hook_queue_events = 3\n")
    with NodeProcess(home / "data", "--config", cfg, "--allow-unsigned-plugins") as node, SyncClient(node.url) as c:
        install(node, probe(home, "probe-a", "ProbeA", ["pa:"], "hooks.kv.>,hooks.plugin.>"), home)
        install(node, probe(home, "probe-b", "ProbeB", ["pb:"], "hooks.>", read=False), home)
        install(node, probe(home, "probe-slow", "ProbeSlow", ["ps:"], "hooks.kv.>", sleep=0.5), home)
        written: dict[str, list[int]] = {}
        started = time.monotonic()
        for i in range(40):
            for key in (f"pa:{i % 3}", f"pb:{i % 2}", f"ps:{i}", f"elsewhere:{i}"):
                written.setdefault(key, []).append(c.write_key(key, f"v{i}".encode()).revision)
        writing = time.monotonic() - started
        c.delete_key("pa:0")

        a = until(lambda: (e := kv_events(c, "ProbeA")) and len(e) >= 41 and e, what="probe-a events")
        assert {e["key"] for e in a} == {"pa:0", "pa:1", "pa:2"}  # never a key outside its prefixes
        for key in ("pa:1", "pa:2"):  # in order per key, every one
            assert [e["revision"] for e in a if e["key"] == key] == written[key]
        assert [e["value"] for e in a if e["key"] == "pa:1"] == [f"v{i}" for i in range(1, 40, 3)]  # with kv_read
        b = until(lambda: (e := kv_events(c, "ProbeB")) and len(e) >= 40 and e, what="probe-b events")
        assert {e["key"] for e in b} == {"pb:0", "pb:1"} and not [e for e in b if "value" in e or "value_b64" in e]
        topics = {e["topic"] for e in c.call("ProbeAEvents", {})["events"]}
        assert "hooks.kv.delete_committed" in topics and "hooks.plugin.installed" in topics  # probes installed after it

        slow = lambda: c.call("ProbeSlowCall", {"method": "hook_list"})["ok"]
        stats = until(lambda: (s := slow())["dropped"] > 0 and s["delivered"] >= 1 and s, what="probe-slow drops")
        assert stats["patterns"] == ["hooks.kv.>"]  # delivered counts a callback once it returned, 0.5 s each
        metrics = httpx.get(f"{node.url}/metrics").text
        line = next(x for x in metrics.splitlines() if x.startswith('aspen_hooks_dropped_total{plugin="probe-slow"}'))
        assert float(line.split()[-1]) > 0
        assert writing < 30  # 160 writes never waited for the slow subscriber's 0.5 s per event
        assert c.call("ProbeACall", {"method": "hook_subscribe", "params": {"pattern": "a..b"}})["code"] == (
            "HOOK_PATTERN_INVALID"
        )
