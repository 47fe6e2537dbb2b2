"""``aspen cluster …``: the Aspen nodes and the etcd cluster under them."""

from __future__ import annotations

import time

import msgspec
import typer
from rich.table import Table
from rich.text import Text

from aspen.cli.common import (
    JsonOpt,
    UrlOpt,
    connect,
    console,
    literal,
    print_json,
    reports_errors,
)
from aspen.cluster.handler import ClusterStatusResult

app = typer.Typer(help="Cluster membership and the etcd cluster's health.", no_args_is_help=True)


def _ago(ts: float) -> str:
    return f"{max(0.0, time.time() - ts):.1f} s ago"


@app.command()
@reports_errors
def status(url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Aspen nodes (address, version, last seen), etcd members with health, and the etcd leader."""
    with connect(url) as client:
        body = client.call("ClusterStatus", {})
    result = msgspec.convert(body, ClusterStatusResult)
    if json:
        print_json(result)
        return
    nodes = Table(title=f"Aspen nodes ({len(result.nodes)})", title_justify="left")
    for col in ("node id", "url", "version", "started", "last seen"):
        nodes.add_column(col)
    for n in result.nodes:
        mark = " (answered)" if n.node_id == result.node_id else ""
        nodes.add_row(
            literal(n.node_id + mark), literal(n.url), literal(n.version), _ago(n.started_at), _ago(n.last_seen)
        )
    console.print(nodes)
    if result.etcd is None:
        console.print(literal(f"storage: {result.backend} (no etcd cluster)"))
        return
    members = Table(title=f"etcd members ({len(result.etcd.members)})", title_justify="left")
    for col in ("name", "id", "client url", "health", "leader", "version", "raft index", "db size"):
        members.add_column(col)
    for m in result.etcd.members:
        health = (
            Text.assemble(("healthy", "green")) if m.healthy else Text.assemble(("unhealthy", "red"), f" {m.error}")
        )
        members.add_row(
            literal(m.name),
            literal(m.id),
            literal(", ".join(m.client_urls)),
            health,
            "*" if m.is_leader else "",
            literal(m.version),
            str(m.raft_index) if m.healthy else "",
            f"{m.db_size / 1024:.0f} KiB" if m.healthy else "",
        )
    console.print(members)
    console.print(Text.assemble("etcd leader: ", (result.etcd.leader, "") if result.etcd.leader else ("none", "red")))


@app.command()
@reports_errors
def identity(url: UrlOpt = None, json: JsonOpt = False) -> None:
    """This cluster's federation identity: its Ed25519 key, name and the signed document."""
    from aspen.federation.requests import ClusterIdentityResult

    with connect(url) as client:
        result = msgspec.convert(client.call("ClusterIdentity", {}), ClusterIdentityResult)
    if json:
        print_json(result)
        return
    doc = result.identity.document
    console.print(literal(f"name:      {doc.name}"))
    console.print(literal(f"key:       {doc.cluster_key}"))
    console.print(literal(f"signature: {result.identity.signature} ({'valid' if result.valid else 'INVALID'})"))
