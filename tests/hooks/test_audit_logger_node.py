"""The audit-logger WASM plugin (plugins/audit-logger) on a real node: every
acknowledged write under ``audited:`` gets its audit record, in order per
key, and nothing outside that prefix does — also when the node is SIGKILLed
in the middle of a stream of writes and restarted on the same data dir (the
durable cursor makes delivery at least once)."""

from __future__ import annotations

import json
import threading

import httpx

from aspen.client import SyncClient
from aspen.errors import AspenError
from tests.hooks.real_nodes import config, install, until
from tests.node.node_process import NodeProcess

LOG = "__plugin:audit-logger:log:"
KEYS = 5  # audited keys, written round robin


def records(client: SyncClient) -> list[tuple[dict, int]]:
    """Every audit record with the revision it was (last) written at."""
    out, token = [], None
    while True:
        page = client.scan_keys(LOG, limit=1000, continuation_token=token)
        out += [(json.loads(e.value), e.mod_revision) for e in page.entries]
        if not page.is_truncated:
            return out
        token = page.continuation_token


def audited(client: SyncClient, written: dict[str, list[tuple[int, str]]]) -> bool:
    """Whether every acknowledged write has its record; asserts what must hold meanwhile."""
    got = records(client)
    assert all(r["key"].startswith("audited:") for r, _ in got), "a record for a key outside its prefix"
    assert all(r["topic"] == "hooks.kv.write_committed" for r, _ in got)
    audited = {(r["key"], r["revision"], r["value"]) for r, _ in got}
    return all((key, rev, value) in audited for key, writes in written.items() for rev, value in writes)


def assert_in_order(client: SyncClient) -> None:
    """Per key, a later change's record was written later. Checked once the
    newest write is audited: while the restarted node redelivers from its
    cursor, an older change's record is rewritten before a newer one's."""
    by_key: dict[str, list[tuple[dict, int]]] = {}
    for r, written_at in records(client):
        by_key.setdefault(r["key"], []).append((r, written_at))
    for key, recs in by_key.items():
        recs.sort(key=lambda x: x[0]["revision"])
        assert [at for _, at in recs] == sorted(at for _, at in recs), key


class Writer(threading.Thread):
    """Writes round robin under ``audited:`` and elsewhere until stopped or the node goes."""

    def __init__(self, url: str, tag: str) -> None:
        super().__init__(daemon=True)
        self.url, self.tag = url, tag
        self.written: dict[str, list[tuple[int, str]]] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        with SyncClient(self.url, retries=1) as c:
            i = 0
            while not self.stop.is_set():
                key, value = f"audited:{i % KEYS}", f"{self.tag}{i}"
                try:
                    revision = c.write_key(key, value.encode()).revision
                    c.write_key(f"unaudited:{i % KEYS}", value.encode())
                except (AspenError, httpx.HTTPError):
                    return  # the node was killed: this write may or may not have been committed
                self.written.setdefault(key, []).append((revision, value))
                i += 1

    def count(self) -> int:
        return sum(len(w) for w in self.written.values())


def test_every_write_is_audited_in_order_across_a_sigkill(home, wasm_built):
    cfg = config(home, "solo")
    node = NodeProcess(home / "data", "--config", cfg, "--allow-unsigned-plugins")
    with node, SyncClient(node.url) as c:
        install(node, wasm_built / "audit-logger", home)
        first = Writer(node.url, "a")
        first.start()
        until(lambda: first.count() >= 100 and len(records(c)) >= 20, what="writes audited before the kill")
        node.kill()  # SIGKILL, mid-stream: some writes are delivered, some not, the cursor lags
        first.join(10)
        assert not first.is_alive() and first.count() >= 100
    later = NodeProcess(home / "data", "--config", cfg, "--allow-unsigned-plugins")
    with later, SyncClient(later.url) as c:
        second = Writer(later.url, "b")
        second.start()
        until(lambda: second.count() >= 50, what="writes after the restart")
        second.stop.set()
        second.join(10)
        written = {k: first.written.get(k, []) + second.written.get(k, []) for k in {*first.written, *second.written}}
        until(lambda: audited(c, written), what="every acknowledged write audited")
        assert_in_order(c)  # delivery is in order: the newest write's record came after every redelivery
        stats = c.call("AuditLoggerStats", {})
        assert stats["patterns"] == ["hooks.kv.>"] and stats["failed"] == 0 and stats["dropped"] == 0, stats
