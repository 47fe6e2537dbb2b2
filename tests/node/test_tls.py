"""HTTPS: a node serving a certificate made on the fly (trustme); the client
and CLI trust it only through ``cacert``/``--cacert``/``ASPEN_CACERT``; two
nodes on one etcd fetch blobs from each other over verified TLS."""

from __future__ import annotations

import base64
import os
import subprocess

import httpx
import pytest
import trustme

from aspen.client import Client, SyncClient
from aspen.cluster.etcd_launcher import EtcdCluster
from aspen.errors import AspenError, ErrorCode
from aspen.node.config import load_config
from tests.node.admin_token import admin_token, auth_headers
from tests.node.node_process import ASPEN, NodeProcess


class Pki:
    """A CA, its PEM file, and a server certificate for 127.0.0.1/localhost."""

    def __init__(self, root) -> None:
        self.ca = trustme.CA()
        self.ca_pem = root / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_pem))
        server = self.ca.issue_cert("127.0.0.1", "localhost", "::1")
        self.cert, self.key = root / "node.pem", root / "node.key"
        server.cert_chain_pems[0].write_to_path(str(self.cert))
        server.private_key_pem.write_to_path(str(self.key))

    def node_config(self, path, **extra: str) -> str:
        lines = [f'tls_cert = "{self.cert}"', f'tls_key = "{self.key}"', *(f'{k} = "{v}"' for k, v in extra.items())]
        path.write_text("[node]\n" + "\n".join(lines) + "\n")
        return str(path)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def https_node(tmp_path_factory, pki):
    root = tmp_path_factory.mktemp("https")
    with NodeProcess(root / "data", "--config", pki.node_config(root / "aspen.toml"), cacert=str(pki.ca_pem)) as proc:
        yield proc


async def test_client_with_cacert_talks_https(https_node, pki):
    assert https_node.url.startswith("https://")
    async with Client(https_node.url, cacert=str(pki.ca_pem), token=admin_token(https_node.data_dir)) as c:
        await c.write_key("tls/a", b"over tls")
        assert (await c.read_key("tls/a")).value == b"over tls"
        events = c.watch("tls/", start_revision=1)  # the SSE stream goes over the same verified client
        assert (await anext(events)).kv.key == "tls/a"
        await events.aclose()


def test_sync_client_reads_aspen_cacert(https_node, pki, monkeypatch):
    monkeypatch.setenv("ASPEN_CACERT", str(pki.ca_pem))
    with SyncClient(https_node.url, token=admin_token(https_node.data_dir)) as c:
        assert c.get_health().node_id


async def test_client_without_the_ca_fails_clearly(https_node):
    async with Client(https_node.url, token=admin_token(https_node.data_dir), retries=1) as c:
        with pytest.raises(AspenError) as err:
            await c.ping()
    assert err.value.code == ErrorCode.TLS_VERIFY_FAILED
    assert https_node.url in err.value.message and "--cacert" in err.value.message


async def test_client_with_another_ca_fails(https_node, tmp_path):
    other = tmp_path / "other.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    async with Client(https_node.url, cacert=str(other)) as c:
        with pytest.raises(AspenError) as err:
            await c.ping()
    assert err.value.code == ErrorCode.TLS_VERIFY_FAILED


def test_client_with_a_missing_ca_file(tmp_path):
    with pytest.raises(AspenError) as err:
        Client("https://127.0.0.1:1", cacert=str(tmp_path / "nope.pem"))
    assert err.value.code == ErrorCode.INVALID_ARGUMENT and "nope.pem" in err.value.message


def test_plain_http_is_not_served(https_node):
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{https_node.port}/healthz", timeout=5)


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "ASPEN_CACERT"}
    return subprocess.run([ASPEN, *args], check=False, capture_output=True, text=True, timeout=60, env={**base, **env})


def test_cli_cacert_option_and_env(https_node, pki):
    token = {"ASPEN_TOKEN": t} if (t := admin_token(https_node.data_dir)) else {}
    ok = _cli("--cacert", str(pki.ca_pem), "status", "--url", https_node.url, "--json", **token)
    assert ok.returncode == 0, ok.stderr
    ok = _cli("kv", "put", "tls/cli", "v", "--url", https_node.url, ASPEN_CACERT=str(pki.ca_pem), **token)
    assert ok.returncode == 0, ok.stderr
    bad = _cli("kv", "get", "tls/cli", "--url", https_node.url, **token)
    assert bad.returncode == 1 and "TLS_VERIFY_FAILED" in bad.stderr and "Traceback" not in bad.stderr


def test_advertise_url_is_https_with_tls(pki):
    cfg = load_config(listen="127.0.0.1:7500", tls_cert=str(pki.cert), tls_key=str(pki.key))
    assert cfg.advertise_url == "https://127.0.0.1:7500"
    assert load_config(listen="127.0.0.1:7500").advertise_url == "http://127.0.0.1:7500"


@pytest.mark.parametrize(
    "settings, needle",
    [
        ({"tls_cert": "CERT"}, "tls_cert and tls_key go together"),
        ({"tls_cert": "CERT", "tls_key": "/nonexistent.key"}, "/nonexistent.key is not a file"),
        ({"tls_ca": "/nonexistent.pem"}, "tls_ca /nonexistent.pem"),
        ({"etcd_user": "root"}, "etcd_user and etcd_password go together"),
        ({"etcd_cert": "CERT"}, "etcd_cert and etcd_key go together"),
    ],
)
def test_bad_tls_settings_name_the_problem(pki, settings, needle):
    settings = {k: str(pki.cert) if v == "CERT" else v for k, v in settings.items()}
    with pytest.raises(AspenError) as err:
        load_config(**settings)
    assert err.value.code == ErrorCode.INVALID_ARGUMENT and needle in err.value.message


def test_mismatched_key_stops_the_node_with_a_clear_error(pki, tmp_path):
    other = trustme.CA().issue_cert("127.0.0.1")
    wrong_key = tmp_path / "wrong.key"
    other.private_key_pem.write_to_path(str(wrong_key))
    config = tmp_path / "aspen.toml"
    config.write_text(f'[node]\ntls_cert = "{pki.cert}"\ntls_key = "{wrong_key}"\n')
    r = subprocess.run(
        [ASPEN, "node", "start", "--data-dir", str(tmp_path / "d"), "--listen", "127.0.0.1:0", "--config", str(config)],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 1 and "INVALID_ARGUMENT" in r.stderr and "cannot load" in r.stderr
    assert "Traceback" not in r.stderr


# --- two nodes on one etcd, blobs fetched between them over HTTPS -----------------


@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    cluster = EtcdCluster(tmp_path_factory.mktemp("tls-etcd"), size=1)
    try:
        yield cluster.start(timeout=60)
    finally:
        cluster.stop()


def _rpc(node: NodeProcess, type_: str, body: dict) -> dict:
    r = httpx.post(f"{node.url}/v1/rpc", json={"type": type_, "body": body}, headers=auth_headers(node.data_dir),
                   verify=node.verify, timeout=30)  # fmt: skip
    assert r.status_code == 200, r.text
    return r.json()


def test_nodes_fetch_blobs_from_each_other_over_tls(tmp_path, pki, etcd):
    endpoints = ",".join(etcd.endpoints)

    def node(name: str, **extra: str) -> NodeProcess:
        config = pki.node_config(tmp_path / f"{name}.toml", **extra)
        return NodeProcess(tmp_path / name, "--config", config, "--etcd", endpoints, cacert=str(pki.ca_pem))

    data = os.urandom(70_000)
    with node("a", tls_ca=str(pki.ca_pem)) as a, node("b", tls_ca=str(pki.ca_pem)) as b, node("c") as c:
        added = _rpc(a, "AddBlob", {"data": base64.b64encode(data).decode()})["body"]
        got = _rpc(b, "GetBlob", {"hash": added["hash"]})
        assert got["type"] == "GetBlobResult" and base64.b64decode(got["body"]["data"]) == data
        # c checks peers against the system CAs, which do not know ours: it cannot fetch
        refused = _rpc(c, "GetBlob", {"hash": added["hash"]})
        assert refused["type"] == "Error" and refused["body"]["code"] == "PEER_UNAVAILABLE"
        assert "CERTIFICATE_VERIFY_FAILED" in c.log() or "certificate verify failed" in c.log()
