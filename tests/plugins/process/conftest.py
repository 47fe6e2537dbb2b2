"""Real plugin processes in the real job sandbox, calling a real SQLite KV
store through the one PluginGate."""

from __future__ import annotations

import asyncio
import os
import sysconfig
import threading
import time
import uuid
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aspen.jobs.sandbox import Sandbox
from aspen.plugins.gate import PluginGate
from aspen.plugins.host_functions import HostEnv
from aspen.plugins.namespace import default_prefix
from aspen.plugins.process.connection import PeerLimits
from aspen.plugins.process.egress import EgressLimits
from aspen.plugins.process.host_calls import GatedHostCalls
from aspen.plugins.process.supervisor import ProcessSpec, ProcessSupervisor, RestartPolicy

REPO = Path(__file__).resolve().parents[3]
PROGRAMS = Path(__file__).parent / "programs"
SITE = sysconfig.get_paths()["purelib"]  # msgspec, for SDK plugins
ECHO = REPO / "plugins" / "echo-process"
EGRESS_HANDLES = ("Fetch", "Tunnel", "Direct", "Hold", "Release", "Raw")
HOSTILE_HANDLES = ("Echo", "Crash", "Hang", "Huge", "Garbage", "Flood", "HostCall", "RawHost", "Stderr", "BadShape")
FAST = RestartPolicy(backoff_base=0.05, backoff_max=0.2, startup_timeout=20.0, health_interval=0, stop_grace=2.0)


async def until(condition, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def alive(tag: str) -> list[int]:
    """Processes whose command line carries ``tag``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if tag.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            continue
    return found


def open_pipes() -> int:
    return sum(os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:") for fd in os.listdir("/proc/self/fd")
               if os.path.exists(f"/proc/self/fd/{fd}"))  # fmt: skip


@pytest.fixture
def sandbox() -> Sandbox:
    return Sandbox("required", ro_binds=[str(REPO), SITE])


@pytest.fixture
def host_env(kv, blobs):
    def make(name: str, permissions: frozenset[str]) -> HostEnv:
        gate = PluginGate(name, permissions, (default_prefix(name),))
        return HostEnv(
            gate, kv=kv, blobs=blobs, loop=asyncio.get_running_loop(), loop_thread=threading.get_ident(),
            node_info={"node_id": "node-1", "cluster": "test"}, signing_key=Ed25519PrivateKey.generate(),
            max_reply_bytes=4 << 20,
        )  # fmt: skip

    return make


@pytest.fixture
async def launch(sandbox, host_env):
    """``await launch("hostile", **options)`` starts a supervised plugin; every
    one is stopped at the end and must leave no process behind."""
    started: list[tuple[ProcessSupervisor, str]] = []

    def make(program: str = "hostile", *, name: str | None = None, env: dict[str, str] | None = None,
             permissions: frozenset[str] = frozenset({"kv_read", "kv_write"}), policy: RestartPolicy = FAST,
             peer_limits: PeerLimits | None = None, allowed_hosts: tuple[str, ...] = (),
             egress: EgressLimits | None = None) -> tuple[ProcessSupervisor, str]:  # fmt: skip
        tag = f"--aspen-test={uuid.uuid4().hex}"
        if program == "egress":
            spec = ProcessSpec("egress", EGRESS_HANDLES, ("python3", "egress.py", tag), str(PROGRAMS),
                               env={"PYTHONPATH": f"{REPO}:{SITE}"}, allowed_hosts=allowed_hosts)  # fmt: skip
        elif program == "echo":
            spec = ProcessSpec("echo-process", ("Ping", "Echo", "EchoRead", "EchoTimer"), ("/usr/bin/python3", "plugin.py", tag),
                               str(ECHO), env={"PYTHONPATH": f"{REPO}:{SITE}", **(env or {})})  # fmt: skip
        else:
            spec = ProcessSpec(name or "hostile", HOSTILE_HANDLES, ("/usr/bin/python3", "hostile.py", tag),
                               str(PROGRAMS), env=env or {})  # fmt: skip
        serve = GatedHostCalls(host_env(spec.name, permissions), timeout=5.0)
        sup = ProcessSupervisor(spec, serve, sandbox=sandbox, policy=policy, peer_limits=peer_limits, egress=egress)
        started.append((sup, tag))
        return sup, tag

    async def start(program: str = "hostile", **options) -> ProcessSupervisor:
        sup, _ = make(program, **options)
        await sup.start()
        return sup

    start.make = make  # type: ignore[attr-defined]
    yield start
    for sup, tag in started:
        await sup.stop()
        assert alive(tag) == [], "a plugin process outlived its supervisor"


def decode(raw: msgspec.Raw):
    return msgspec.json.decode(raw)
