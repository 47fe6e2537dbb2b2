"""``scripts/run-node.sh``, the README's run command, as a user runs it: it
sets up the machine (fast when everything is installed), starts a node,
installs the example plugins, serves them, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path

from aspen import Client
from tests.node.node_process import free_port

REPO = Path(__file__).resolve().parents[2]


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def alive(pid: int) -> bool:
    """Running (a zombie or a reused pid that is not ``aspen node`` counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z" and b"node\x00start" in cmdline


class Output:
    """The script's merged stdout/stderr, read by a thread so waits are bounded."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self.ended = False
        self._queue: queue.Queue[bytes | None] = queue.Queue()  # None: every writer is gone
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:
        for raw in stream:
            self._queue.put(raw)
        self._queue.put(None)

    def until(self, needle: str, timeout: float) -> str:
        """The first line containing ``needle``; AssertionError at the end of the
        output or after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                raw = self._queue.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {needle!r} within {timeout} s:\n{self}") from None
            if raw is None:
                self.ended = True
                raise AssertionError(f"output ended without {needle!r}:\n{self}")
            self.lines.append(raw.decode(errors="replace"))
            if needle in self.lines[-1]:
                return self.lines[-1]

    def rest(self, timeout: float = 10) -> str:
        """Everything up to the end of the output (bounded by ``timeout``)."""
        if self.ended:
            return str(self)
        deadline = time.monotonic() + timeout
        try:
            while (raw := self._queue.get(timeout=max(0.1, deadline - time.monotonic()))) is not None:
                self.lines.append(raw.decode(errors="replace"))
            self.ended = True
        except queue.Empty:
            pass
        return str(self)

    def __str__(self) -> str:
        return "".join(self.lines)


async def test_run_node_script_serves_the_example_plugins_and_stops_on_sigterm(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("ASPEN_URL", "ASPEN_TOKEN")}
    env.update(ASPEN_DATA_DIR=str(tmp_path / "data"), ASPEN_LISTEN=f"127.0.0.1:{port}", PYTHONUNBUFFERED="1")
    script = subprocess.Popen(
        ["bash", "scripts/run-node.sh"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so a failed test can end all of it
    )
    out = Output(script.stdout)
    try:
        # setup.sh + node start + three plugin installs, on a busy machine
        line = await asyncio.to_thread(out.until, "aspen node serving on", 240)
        assert f"http://127.0.0.1:{port}" in line and "echo, kv-counter, service-registry" in line
        (node_pid,) = children(script.pid)
        assert alive(node_pid)

        async with Client(f"http://127.0.0.1:{port}", timeout=30) as client:
            assert await client.call("Echo", {"msg": "hello", "n": 3}) == {"msg": "hello", "n": 3}
            first = await client.call("KvCounterIncrement", {"name": "run-node"})
            assert first["key"] == "counter:run-node" and first["value"] == 1
            assert (await client.call("KvCounterIncrement", {"name": "run-node"}))["value"] == 2
            assert (await client.read_key("counter:run-node")).kv.value == b"2"  # the plugin wrote through to KV

        # "in another terminal": the CLI finds the admin token through the credentials entry the script wrote
        put = await asyncio.to_thread(
            subprocess.run,
            [str(REPO / ".venv" / "bin" / "aspen"), "kv", "put", "a", "b"],
            env={**env, "ASPEN_URL": f"http://127.0.0.1:{port}"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert put.returncode == 0, put.stderr

        script.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(script.wait, 60)
        assert code == 0, await asyncio.to_thread(out.rest)
        assert "stores closed" in await asyncio.to_thread(out.rest)  # the node shut down in order
        for _ in range(100):  # bash waited for it, so it should be gone already
            if not alive(node_pid):
                break
            await asyncio.sleep(0.1)
        assert not alive(node_pid), "the node outlived run-node.sh"
    finally:
        if script.poll() is None:
            os.killpg(script.pid, signal.SIGKILL)
            script.wait(10)
