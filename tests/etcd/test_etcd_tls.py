"""The etcd backend on a real single-member etcd that serves TLS only, demands a
client certificate (trustme, made on the fly) and has its user/password auth
enabled; and a node configured with the ``[node] etcd_*`` keys on it."""

from __future__ import annotations

import asyncio
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
import trustme
from aetcd import rpc

from aspen.cluster.etcd_launcher import (
    MAX_REQUEST_BYTES,
    MAX_TXN_OPS,
    find_etcd,
    free_port,
)
from aspen.errors import AspenError, ErrorCode
from aspen.storage.etcd import EtcdKeyValueStore
from aspen.storage.etcd_security import EtcdSecurity, open_channel
from tests.node.node_process import NodeProcess

pytestmark = pytest.mark.etcd
ROOT_PASSWORD = "root-secret"
READER_PASSWORD = "reader-secret"


@dataclass
class SecureEtcd:
    endpoint: str
    files: dict[str, Path]  # ca, cert, key (the client's), other_ca

    def security(self, **overrides) -> EtcdSecurity:
        args = {"ca": self.files["ca"], "cert": self.files["cert"], "key": self.files["key"], "user": "root",
                "password": ROOT_PASSWORD} | overrides  # fmt: skip
        return EtcdSecurity.from_files(**{k: (str(v) if isinstance(v, Path) else v) for k, v in args.items()})


def _write_pki(root: Path) -> dict[str, Path]:
    ca = trustme.CA()
    files = {name: root / f"{name}.pem" for name in ("ca", "server", "server-key", "cert", "key", "other_ca")}
    ca.cert_pem.write_to_path(str(files["ca"]))
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(str(files["server"]))
    server.private_key_pem.write_to_path(str(files["server-key"]))
    client = ca.issue_cert("aspen-client", common_name="aspen-client")  # CN is no etcd user
    client.cert_chain_pems[0].write_to_path(str(files["cert"]))
    client.private_key_pem.write_to_path(str(files["key"]))
    trustme.CA().cert_pem.write_to_path(str(files["other_ca"]))
    return files


async def _enable_auth(endpoint: str, security: EtcdSecurity) -> None:
    """root (with the root role) and a read-only user, then auth on."""
    channel = open_channel(endpoint, security, [])
    try:
        auth = rpc.AuthStub(channel)
        await auth.UserAdd(rpc.AuthUserAddRequest(name="root", password=ROOT_PASSWORD), timeout=10)
        await auth.RoleAdd(rpc.AuthRoleAddRequest(name="root"), timeout=10)
        await auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user="root", role="root"), timeout=10)
        await auth.UserAdd(rpc.AuthUserAddRequest(name="reader", password=READER_PASSWORD), timeout=10)
        await auth.RoleAdd(rpc.AuthRoleAddRequest(name="read-all"), timeout=10)
        perm = rpc.Permission(permType=rpc.Permission.READ, key=b"\0", range_end=b"\0")
        await auth.RoleGrantPermission(rpc.AuthRoleGrantPermissionRequest(name="read-all", perm=perm), timeout=10)
        await auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user="reader", role="read-all"), timeout=10)
        await auth.AuthEnable(rpc.AuthEnableRequest(), timeout=10)
    finally:
        await channel.close()


@pytest.fixture(scope="module")
def secure_etcd(tmp_path_factory):
    root = tmp_path_factory.mktemp("etcd-tls")
    files = _write_pki(root)
    client_port, peer_port = free_port(), free_port()
    client_url, peer_url = f"https://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    log = (root / "etcd.log").open("ab")
    proc = subprocess.Popen(
        [find_etcd(), "--name", "tls0", "--data-dir", str(root / "data"),
         "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
         "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
         "--initial-cluster", f"tls0={peer_url}", "--initial-cluster-state", "new",
         "--cert-file", str(files["server"]), "--key-file", str(files["server-key"]),
         "--trusted-ca-file", str(files["ca"]), "--client-cert-auth",
         "--max-txn-ops", str(MAX_TXN_OPS), "--max-request-bytes", str(MAX_REQUEST_BYTES),
         "--bcrypt-cost", "4", "--logger", "zap", "--log-level", "warn"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    log.close()
    etcd = SecureEtcd(f"127.0.0.1:{client_port}", files)
    try:
        cert_only = etcd.security(user=None, password=None)
        asyncio.run(_wait_serving(etcd.endpoint, cert_only, proc))
        asyncio.run(_enable_auth(etcd.endpoint, cert_only))
        yield etcd
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _wait_serving(endpoint: str, security: EtcdSecurity, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, f"etcd exited with {proc.returncode}"
        try:
            store = await EtcdKeyValueStore.open([endpoint], security=security, connect_timeout=1)
        except AspenError:
            assert time.monotonic() < deadline, "etcd with TLS did not come up"
            await asyncio.sleep(0.1)
            continue
        await store.close()
        return


async def test_tls_client_cert_and_password(secure_etcd):
    store = await EtcdKeyValueStore.open([secure_etcd.endpoint], security=secure_etcd.security())
    try:
        watch = store.watch("tls/")
        first = asyncio.ensure_future(anext(watch))  # the watch stream carries the token too
        await store.put("tls/a", b"1")
        assert (await store.get("tls/a")).value == b"1"
        event = await asyncio.wait_for(first, 20)
        assert event.kv.key == "tls/a"
        await watch.aclose()
        lease = await store.lease_grant(30)
        assert (await store.lease_keepalive(lease.id)).id == lease.id  # a stream call, with the token
    finally:
        await store.close()


async def test_a_token_etcd_dropped_is_fetched_again(secure_etcd):
    store = await EtcdKeyValueStore.open([secure_etcd.endpoint], security=secure_etcd.security())
    channel = open_channel(secure_etcd.endpoint, secure_etcd.security(user=None, password=None), [])
    try:
        await store.put("tls/t", b"before")
        auth = rpc.AuthStub(channel)
        mine = (await auth.Authenticate(rpc.AuthenticateRequest(name="root", password=ROOT_PASSWORD), timeout=10)).token
        # same password: etcd keeps it but forgets every token of root, the store's included
        await auth.UserChangePassword(
            rpc.AuthUserChangePasswordRequest(name="root", password=ROOT_PASSWORD),
            metadata=(("token", mine),),
            timeout=10,
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await rpc.KVStub(channel).Range(rpc.RangeRequest(key=b"tls/t"), metadata=(("token", mine),), timeout=10)
        assert "invalid auth token" in err.value.details()
        await store.put("tls/t", b"after")
        assert (await store.get("tls/t")).value == b"after"
    finally:
        await channel.close()
        await store.close()


@pytest.mark.parametrize(
    "overrides, code, needle",
    [
        ({"password": "wrong"}, ErrorCode.ETCD_AUTH_FAILED, "root"),
        ({"user": "nobody", "password": "x"}, ErrorCode.ETCD_AUTH_FAILED, "nobody"),
        ({"ca": None, "cert": None, "key": None}, ErrorCode.ETCD_UNREACHABLE, "127.0.0.1"),  # plaintext to a TLS port
        ({"cert": None, "key": None}, ErrorCode.ETCD_UNREACHABLE, "127.0.0.1"),  # no client certificate
        ({"ca": "other_ca"}, ErrorCode.ETCD_UNREACHABLE, "127.0.0.1"),  # a CA that did not sign etcd's cert
    ],
)
async def test_bad_credentials_fail_the_open_clearly(secure_etcd, overrides, code, needle):
    overrides = {k: secure_etcd.files[v] if v == "other_ca" else v for k, v in overrides.items()}
    t0 = time.monotonic()
    with pytest.raises(AspenError) as err:
        await EtcdKeyValueStore.open([secure_etcd.endpoint], security=secure_etcd.security(**overrides))
    assert err.value.code == code and needle in err.value.message, err.value.message
    assert time.monotonic() - t0 < 15


async def test_without_a_user_calls_are_refused(secure_etcd):
    store = await EtcdKeyValueStore.open(
        [secure_etcd.endpoint], security=secure_etcd.security(user=None, password=None)
    )
    try:
        with pytest.raises(AspenError) as err:
            await store.get("tls/a")
        assert err.value.code == ErrorCode.ETCD_AUTH_FAILED
    finally:
        await store.close()


async def test_a_read_only_user_cannot_write(secure_etcd):
    store = await EtcdKeyValueStore.open(
        [secure_etcd.endpoint], security=secure_etcd.security(user="reader", password=READER_PASSWORD)
    )
    try:
        await store.get("tls/a")
        with pytest.raises(AspenError) as err:
            await store.put("tls/ro", b"x")
        assert err.value.code == ErrorCode.ETCD_AUTH_FAILED and "permission denied" in err.value.message
    finally:
        await store.close()


def test_node_on_secure_etcd(secure_etcd, tmp_path):
    f = secure_etcd.files
    config = tmp_path / "aspen.toml"
    config.write_text(
        f'[node]\netcd = ["{secure_etcd.endpoint}"]\netcd_ca = "{f["ca"]}"\netcd_cert = "{f["cert"]}"\n'
        f'etcd_key = "{f["key"]}"\netcd_user = "root"\netcd_password = "{ROOT_PASSWORD}"\n'
    )
    with NodeProcess(tmp_path / "data", "--config", str(config)) as node:
        headers = node.auth_headers
        put = {"type": "WriteKey", "body": {"key": "tls/node", "value": "aGk="}}
        assert httpx.post(f"{node.url}/v1/rpc", json=put, headers=headers).json()["type"] == "WriteResult"
        got = httpx.post(f"{node.url}/v1/rpc", json={"type": "ReadKey", "body": {"key": "tls/node"}}, headers=headers)
        assert got.json()["body"]["kv"]["value"] == "aGk="
