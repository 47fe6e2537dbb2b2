"""The proxy hop over HTTPS: the target's certificate is verified with the
forwarding node's ``tls_ca``; a cluster that cannot verify it does not send
the request there (the target counts as unreachable)."""

from __future__ import annotations

from aspen.client import SyncClient
from tests.federation.conftest import install_echo
from tests.federation.test_announcements import wait_for
from tests.federation.test_proxy import call_error, has_echo, proxied
from tests.federation.test_trust import key_of
from tests.node.node_process import NodeProcess, free_port
from tests.node.test_tls import Pki


def test_the_hop_verifies_the_target_certificate(tmp_path, clusters):
    pki = Pki(tmp_path)
    pa, pb, pc = free_port(), free_port(), free_port()
    fed = '[federation]\nname = "{}"\nannounce_interval = 0.3\n{}'.format
    proxy = "[federation.proxy]\nenabled = true\ntimeout = 3\n"
    (tmp_path / "a.toml").write_text(f'[node]\ntls_ca = "{pki.ca_pem}"\n' + fed("a", "") + proxy)
    (tmp_path / "b.toml").write_text(fed("b", "") + proxy)  # no tls_ca: the system CAs, which do not know C's
    (tmp_path / "c.toml").write_text(
        f'[node]\ntls_cert = "{pki.cert}"\ntls_key = "{pki.key}"\n'
        + fed("c", f'peers = ["http://127.0.0.1:{pa}", "http://127.0.0.1:{pb}"]\n')
    )
    a, b = (clusters.enter_context(NodeProcess(tmp_path / n, "--config", str(tmp_path / f"{n}.toml"), port=p))
            for n, p in (("a", pa), ("b", pb)))  # fmt: skip
    c = clusters.enter_context(
        NodeProcess(tmp_path / "c", "--config", str(tmp_path / "c.toml"), "--allow-unsigned-plugins", port=pc,
                    cacert=str(pki.ca_pem))
    )  # fmt: skip
    assert c.url.startswith("https://")
    with SyncClient(a.url) as ca, SyncClient(b.url) as cb, SyncClient(c.url, cacert=str(pki.ca_pem)) as cc:
        for client in (ca, cb):
            client.call("TrustCluster", {"cluster_key": key_of(cc)})
            cc.call("TrustCluster", {"cluster_key": key_of(client)})
        install_echo(cc)
        wait_for(lambda: has_echo(ca, "c") and has_echo(cb, "c"), 15, "C's echo pushed to A and B")
        assert ca.call("Echo", {"over": "tls"}) == {"over": "tls"}
        assert proxied(a.url, "ok") == 1
        assert call_error(cb, "Echo", {}).code == "CAPABILITY_UNAVAILABLE"
        assert proxied(b.url, "unreachable") >= 1 and proxied(b.url, "ok") == 0
