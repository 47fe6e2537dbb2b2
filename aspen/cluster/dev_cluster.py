"""A whole distributed Aspen on loopback for development: an etcd cluster
(:mod:`aspen.cluster.etcd_launcher`), a SeaweedFS for the blobs
(:mod:`aspen.cluster.seaweed_launcher`, unless ``object_store=False``: then
nodes replicate blobs between themselves) and N Aspen nodes on them, each node
a real ``aspen node start --etcd … --blob-store s3://…`` subprocess with its
own data dir. Each node's URL is recorded with its admin token in the
credentials file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from aspen.auth.keys import ADMIN_TOKEN_FILE
from aspen.client.credentials import forget, remember
from aspen.cluster.etcd_launcher import EtcdCluster, free_port
from aspen.cluster.seaweed_launcher import SeaweedFS, access_env
from aspen.errors import AspenError, ErrorCode

_NODE_MAIN = "from aspen.cli.main import app; app()"
DEV_BUCKET = "aspen-dev"


@dataclass
class DevNode:
    name: str
    port: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class DevCluster:
    base_dir: Path
    nodes: int = 3
    etcd_members: int = 3
    object_store: bool = True
    etcd: EtcdCluster | None = None
    seaweed: SeaweedFS | None = None
    members: list[DevNode] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.base_dir = Path(self.base_dir)
        if not 1 <= self.nodes <= 16:
            raise AspenError(ErrorCode.INVALID_ARGUMENT, "--nodes must be 1..16")
        if self.etcd_members not in (1, 3, 5):
            raise AspenError(ErrorCode.INVALID_ARGUMENT, "--etcd-members must be 1, 3 or 5")

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.members]

    def start_node(self, index: int) -> None:
        assert self.etcd is not None
        n = self.members[index]
        n.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable, "-c", _NODE_MAIN, "node", "start",
            "--listen", f"127.0.0.1:{n.port}",
            "--data-dir", str(n.data_dir),
            "--etcd", ",".join(self.etcd.endpoints),
            "--log-level", "warning",
        ]  # fmt: skip
        env = dict(os.environ)
        if self.seaweed is not None:
            cmd += ["--blob-store", f"s3://{DEV_BUCKET}?endpoint={self.seaweed.endpoint}"]
            env.update(access_env())
        with open(n.log_path, "ab") as log:
            n.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)

    def wait_node(self, index: int, timeout: float = 60.0) -> None:
        n = self.members[index]
        deadline = time.monotonic() + timeout
        while True:
            if n.process is not None and n.process.poll() is not None:
                raise AspenError(
                    ErrorCode.UNAVAILABLE, f"node {n.name} exited with {n.process.returncode}; see {n.log_path}"
                )
            try:
                with urllib.request.urlopen(f"{n.url}/healthz", timeout=1.0) as resp:
                    if resp.status == 200:
                        remember(n.url, n.data_dir / ADMIN_TOKEN_FILE)  # the CLI and clients just work
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise AspenError(ErrorCode.TIMEOUT, f"node {n.name} not up after {timeout:.0f}s; see {n.log_path}")
            time.sleep(0.1)

    def start(self, timeout: float = 60.0) -> DevCluster:
        """Start etcd and SeaweedFS, then the nodes; on any failure stop what was started."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.etcd = EtcdCluster(self.base_dir / "etcd", size=self.etcd_members).start(timeout)
            if self.object_store:
                self.seaweed = SeaweedFS(self.base_dir / "seaweedfs").start(timeout)
            for i in range(self.nodes):
                name = f"node{i}"
                self.members.append(DevNode(name, free_port(), self.base_dir / name, self.base_dir / f"{name}.log"))
                self.start_node(i)
            for i in range(self.nodes):
                self.wait_node(i, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the nodes (they drain and deregister), then stop SeaweedFS and etcd."""
        for n in self.members:
            if n.running():
                n.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for n in self.members:
            if n.process is None:
                continue
            try:
                n.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                n.process.kill()
                n.process.wait()
            forget(n.url)  # the port is free again: whoever binds it next is not this node
        if self.seaweed is not None:
            self.seaweed.stop()
        if self.etcd is not None:
            self.etcd.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
