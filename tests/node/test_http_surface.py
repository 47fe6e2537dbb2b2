"""/healthz and /metrics of a running node."""

from __future__ import annotations

import re

import httpx


def test_healthz(node):
    r = httpx.get(f"{node.url}/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_metrics_count_requests_by_type_and_outcome(node):
    def count(text: str, type_: str, outcome: str) -> float:
        m = re.search(rf'aspen_rpc_requests_total{{outcome="{outcome}",type="{type_}"}} (\S+)', text)
        return float(m.group(1)) if m else 0.0

    before = httpx.get(f"{node.url}/metrics").text
    for _ in range(3):
        httpx.post(f"{node.url}/v1/rpc", json={"type": "Ping"}, headers=node.auth_headers)
    httpx.post(f"{node.url}/v1/rpc", json={"type": "ReadKey", "body": {"key": ""}}, headers=node.auth_headers)
    httpx.post(f"{node.url}/v1/rpc", json={"type": "Nope"}, headers=node.auth_headers)
    after = httpx.get(f"{node.url}/metrics").text
    assert count(after, "Ping", "ok") - count(before, "Ping", "ok") == 3
    assert count(after, "ReadKey", "INVALID_KEY") - count(before, "ReadKey", "INVALID_KEY") == 1
    assert count(after, "other", "UNKNOWN_REQUEST") - count(before, "other", "UNKNOWN_REQUEST") == 1
    assert 'aspen_rpc_request_seconds_bucket{le="0.001",type="Ping"}' in after
    assert "aspen_rpc_in_flight" in after


def test_metrics_can_move_to_their_own_listen_address(tmp_path):
    from tests.node.node_process import NodeProcess, free_port

    port = free_port()
    (tmp_path / "aspen.toml").write_text(f'[node]\nmetrics_listen = "127.0.0.1:{port}"\n')
    with NodeProcess(tmp_path / "data", "--config", str(tmp_path / "aspen.toml")) as proc:
        assert httpx.get(f"{proc.url}/metrics").status_code == 404
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics")
        assert scraped.status_code == 200 and "aspen_rpc_requests" in scraped.text
        assert proc.terminate() == 0  # SIGTERM stops both listeners and the node exits cleanly
