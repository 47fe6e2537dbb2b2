"""What the HTTP benchmarks (bench_rpc, bench_http) share: ports, starting
and checking servers, an older commit's tree, and wrk runs."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx

VENV_BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
JSON_HEADERS = {"content-type": "application/json"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def checkout(commit: str, work: Path) -> tuple[Path, dict[str, str]]:
    """The tree of ``commit`` and the environment that runs its node: its own
    package first on the path, with the entry points of its own pyproject."""
    tree = work / "before"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), commit], check=True, capture_output=True)
    if (tree / "setup.py").exists():  # its own compiled parts, where a compiler exists
        subprocess.run(
            [sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tree, check=False, capture_output=True
        )
    meta = work / "before-meta" / "aspen_cluster-0.0.0.dist-info"
    meta.mkdir(parents=True)
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: aspen-cluster\nVersion: 0.0.0\n")
    project = tomllib.loads((tree / "pyproject.toml").read_text())["project"]
    lines = ["[aspen.handlers]"] + [f"{k} = {v}" for k, v in project["entry-points"]["aspen.handlers"].items()]
    (meta / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return tree, {**os.environ, "PYTHONPATH": f"{tree}:{meta.parent}"}


def clean_up(procs: list[subprocess.Popen], tree: Path | None, work: Path) -> None:
    """Stop the servers, remove the old commit's worktree and the work directory."""
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(30)
    if tree is not None:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], check=False, capture_output=True)
    shutil.rmtree(work, ignore_errors=True)


def start_node(
    data: Path, port: int, *extra: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen:
    """``aspen node start`` of whatever tree ``env``'s PYTHONPATH points at."""
    return subprocess.Popen(
        [sys.executable, "-c", "from aspen.cli.main import app; app()", "node", "start", "--data-dir", str(data),
         "--listen", f"127.0.0.1:{port}", "--log-level", "warning", *extra],
        env=env, cwd=cwd,
    )  # fmt: skip


def wait_up(url: str, proc: subprocess.Popen) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            httpx.post(f"{url}/v1/rpc", json={"type": "Ping"}, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def wrk(
    url: str, body: bytes, connections: int, duration: int, workdir: Path, token: str | None = None
) -> tuple[float, float, float, int]:
    """``wrk -t1`` POSTing ``body`` to ``/v1/rpc``: (req/s, p50 ms, p99 ms, non-2xx answers)."""
    script = workdir / "post.lua"
    auth = f'wrk.headers["Authorization"] = "Bearer {token}"\n' if token else ""
    script.write_text(
        f'wrk.method = "POST"\nwrk.body = [[{body.decode()}]]\nwrk.headers["Content-Type"] = "application/json"\n'
        + auth
    )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), f"{url}/v1/rpc"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return rps, _latency_ms(out, "50%"), _latency_ms(out, "99%"), int(errors.group(1)) if errors else 0


def _latency_ms(out: str, pct: str) -> float:
    value, unit = re.search(rf"^\s+{pct}\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def require_wrk() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk; scripts/setup.sh does)")
