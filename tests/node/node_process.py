"""A real node in a subprocess on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

import httpx

from aspen.client.credentials import forget, remember

ASPEN = str(Path(sys.executable).with_name("aspen"))
HTTP_SERVERS = ("granian", "uvicorn")  # [node] http_server: the e2e tests of drain and shutdown run on both


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def admin_headers(data_dir: Path) -> dict[str, str]:
    """The Authorization header with the admin token of the node(s) on ``data_dir``."""
    return {"authorization": "Bearer " + (Path(data_dir) / "admin.token").read_text().strip()}


class NodeProcess:
    def __init__(self, data_dir: Path, *extra: str, port: int | None = None, cacert: str | None = None) -> None:
        """``cacert``: the node serves HTTPS (its config has tls_cert/tls_key) signed by this CA."""
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"{'https' if cacert else 'http'}://127.0.0.1:{self.port}"
        self.verify = ssl.create_default_context(cafile=cacert) if cacert else True
        self.log_path = data_dir.with_name(data_dir.name + f"-{self.port}.log")
        self.extra = extra
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> NodeProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                ASPEN,
                "node",
                "start",
                "--data-dir",
                str(self.data_dir),
                "--listen",
                f"127.0.0.1:{self.port}",
                *self.extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        remember(self.url, self.token_path)  # clients and the CLI find the admin token by URL
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1, verify=self.verify).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"node did not become healthy in {timeout}s:\n{self.log()}")

    @property
    def token_path(self) -> Path:
        return self.data_dir / "admin.token"

    @property
    def token(self) -> str:
        """The node's admin token (written at its first start)."""
        return self.token_path.read_text().strip()

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.terminate()
        finally:
            self.kill()
            forget(self.url)  # a later server on this port (another test's) must not be sent this token
