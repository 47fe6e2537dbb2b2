"""Start and stop a local etcd cluster on loopback.

One definition used by the test fixtures and by ``aspen dev cluster``: every
member gets two free ports, its own data directory under ``base_dir``, and
the settings Aspen needs (``--max-txn-ops`` so a 1 000-op transaction plus
the backend's extra reads fits; ``--max-request-bytes`` so a batch of large
values fits; fast heartbeats so a killed leader is replaced within about a
second).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from aspen.errors import AspenError, ErrorCode

ETCD_BINARY = "/usr/bin/etcd"
MAX_TXN_OPS = 2048  # Aspen's 1 000-op limit + the reads the backend adds to a txn
MAX_REQUEST_BYTES = 64 << 20  # etcd's default is 1.5 MiB: too small for batches of 1 MiB values


def find_etcd() -> str:
    path = shutil.which("etcd") or (ETCD_BINARY if os.path.exists(ETCD_BINARY) else None)
    if path is None:
        raise AspenError(
            ErrorCode.EXECUTOR_UNAVAILABLE,
            "etcd is not installed (Debian: apt-get install etcd-server)",
        )
    return path


_LOWEST_PORT = 10000
_handed_out: set[int] = set()  # none of them bound yet, perhaps: never the same twice


def _ephemeral_floor() -> int:
    """The first port the kernel hands out as the source of outgoing connections."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def free_port() -> int:
    """A loopback port free now, below the ephemeral range where the system has one:
    a port the kernel picks (bind to 0) comes from the range it also gives outgoing
    connections, so one of those could take it before the server we start binds it
    (CI saw SeaweedFS's S3 gRPC port lost that way)."""
    floor = _ephemeral_floor()
    for _ in range(64 if floor > _LOWEST_PORT + 1000 else 0):
        port = random.randrange(_LOWEST_PORT, floor)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen | None = None

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class EtcdCluster:
    """A local etcd cluster of ``size`` members (call :meth:`start`)."""

    base_dir: Path
    size: int = 3
    token: str = field(default_factory=lambda: f"aspen-{os.getpid()}-{time.monotonic_ns()}")
    members: list[EtcdMember] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.base_dir = Path(self.base_dir)
        if not self.members:
            for i in range(self.size):
                name = f"etcd{i}"
                self.members.append(
                    EtcdMember(
                        name=name,
                        client_port=free_port(),
                        peer_port=free_port(),
                        data_dir=self.base_dir / name,
                        log_path=self.base_dir / f"{name}.log",
                    )
                )

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def _command(self, m: EtcdMember) -> list[str]:
        initial = ",".join(f"{x.name}={x.peer_url}" for x in self.members)
        return [
            find_etcd(),
            "--name", m.name,
            "--data-dir", str(m.data_dir),
            "--listen-client-urls", m.client_url,
            "--advertise-client-urls", m.client_url,
            "--listen-peer-urls", m.peer_url,
            "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", initial,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", self.token,
            "--heartbeat-interval", "50",
            "--election-timeout", "500",
            "--max-txn-ops", str(MAX_TXN_OPS),
            "--max-request-bytes", str(MAX_REQUEST_BYTES),
            "--logger", "zap",
            "--log-level", "warn",
        ]  # fmt: skip

    def start_member(self, index: int) -> None:
        """Start (or restart with its existing data dir) one member."""
        m = self.members[index]
        if m.running():
            return
        self.base_dir.mkdir(parents=True, exist_ok=True)
        with open(m.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            m.process = subprocess.Popen(
                self._command(m), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def start(self, timeout: float = 30.0) -> EtcdCluster:
        for i in range(len(self.members)):
            self.start_member(i)
        self.wait_healthy(timeout)
        return self

    def kill_member(self, index: int) -> None:
        """SIGKILL one member (a crash: no clean shutdown)."""
        m = self.members[index]
        if m.process is not None:
            m.process.send_signal(signal.SIGKILL)
            m.process.wait()

    def member_healthy(self, index: int) -> bool:
        m = self.members[index]
        if not m.running():
            return False
        try:
            with urllib.request.urlopen(f"{m.client_url}/health", timeout=1.0) as resp:
                return b'"true"' in resp.read()
        except (urllib.error.URLError, OSError):
            return False

    def wait_healthy(self, timeout: float = 30.0, indexes: list[int] | None = None) -> None:
        """Block until the chosen members (default: all running ones) report
        healthy, i.e. the cluster has a leader and they can serve."""
        deadline = time.monotonic() + timeout
        wanted = indexes if indexes is not None else [i for i, m in enumerate(self.members) if m.running()]
        while True:
            for i in wanted:
                m = self.members[i]
                if m.process is not None and m.process.poll() is not None:
                    raise AspenError(
                        ErrorCode.ETCD_UNREACHABLE,
                        f"etcd member {m.name} exited with {m.process.returncode}; see {m.log_path}",
                    )
            if all(self.member_healthy(i) for i in wanted):
                return
            if time.monotonic() > deadline:
                raise AspenError(ErrorCode.ETCD_UNREACHABLE, f"etcd cluster not healthy after {timeout:.0f}s")
            time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM every member, SIGKILL those still running after ``timeout``."""
        for m in self.members:
            if m.running():
                m.process.terminate()
        deadline = time.monotonic() + timeout
        for m in self.members:
            if m.process is None:
                continue
            try:
                m.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                m.process.kill()
                m.process.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
