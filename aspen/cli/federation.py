"""``aspen federation …``: the clusters this one knows, trusts or blocks,
and the trust requests other clusters sent."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.table import Table

from aspen.cli.common import (
    JsonOpt,
    UrlOpt,
    connect,
    console,
    literal,
    print_json,
    reports_errors,
)

app = typer.Typer(help="Peer clusters: announcements, trust and trust requests.", no_args_is_help=True)
KeyArg = Annotated[str, typer.Argument(help="The other cluster's key (64 hex, see `aspen cluster identity`).")]
AppOpt = Annotated[list[str] | None, typer.Option("--app", help="An app it may call here (repeat; default all).")]
CallerOpt = Annotated[
    list[str] | None, typer.Option("--caller", help="A caller on its side it may forward (repeat; default all).")
]


def _call(url: str | None, rtype: str, body: dict[str, Any]) -> dict[str, Any]:
    with connect(url) as client:
        return client.call(rtype, body)


def _show_entry(result: dict[str, Any], json: bool) -> None:
    if json:
        print_json(result)
        return
    e = result["entry"]
    console.print(literal(f"{e['level']}: {e['name']} {e['cluster_key']}"))


@app.command()
@reports_errors
def peers(url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Known clusters: trust level, the apps they announce and until when."""
    result = _call(url, "FederationPeers", {})
    if json:
        print_json(result)
        return
    table = Table(title=f"Clusters ({len(result['peers'])})", title_justify="left")
    for col in ("name", "key", "trust", "apps", "node urls", "expires in"):
        table.add_column(col)
    now = time.time() * 1000
    for p in result["peers"]:
        apps = ", ".join(f"{a['app_id']}@{a['version']}" for a in p["apps"])
        left = f"{(p['expires_at_ms'] - now) / 1000:.0f} s" if p["expires_at_ms"] else "—"
        table.add_row(
            literal(p["name"]),
            p["cluster_key"][:16] + "…",
            p["trust"],
            literal(apps),
            literal(", ".join(p["node_urls"])),
            left,
        )
    console.print(table)


@app.command()
@reports_errors
def trust(
    key: KeyArg,
    name: Annotated[str | None, typer.Option(help="Name to show (default: the announced one).")] = None,
    apps: AppOpt = None,
    callers: CallerOpt = None,
    notes: Annotated[str, typer.Option(help="Why.")] = "",
    url: UrlOpt = None,
    json: JsonOpt = False,
) -> None:
    """Trust a cluster: its announcements are relayed and used, its proxied requests served."""
    body = {"cluster_key": key, "name": name, "apps": apps or ["*"], "callers": callers or ["*"], "notes": notes}
    _show_entry(_call(url, "TrustCluster", body), json)


@app.command()
@reports_errors
def untrust(key: KeyArg, url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Forget a trust (or block) entry: the cluster is public again."""
    result = _call(url, "UntrustCluster", {"cluster_key": key})
    print_json(result) if json else console.print("removed" if result["removed"] else "no entry")


@app.command()
@reports_errors
def block(
    key: KeyArg, notes: Annotated[str, typer.Option(help="Why.")] = "", url: UrlOpt = None, json: JsonOpt = False
) -> None:
    """Block a cluster: its announcements and requests are never used or answered."""
    _show_entry(_call(url, "BlockCluster", {"cluster_key": key, "notes": notes}), json)


@app.command()
@reports_errors
def requests(url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Pending trust requests (they expire after an hour)."""
    result = _call(url, "FederationRequests", {})
    if json:
        print_json(result)
        return
    table = Table(title=f"Trust requests ({len(result['requests'])})", title_justify="left")
    for col in ("name", "key", "message", "expires in"):
        table.add_column(col)
    now = time.time() * 1000
    for r in result["requests"]:
        left = f"{(r['expires_at_ms'] - now) / 1000:.0f} s"
        table.add_row(literal(r["name"]), r["cluster_key"], literal(r["message"]), left)
    console.print(table)


@app.command()
@reports_errors
def accept(
    key: KeyArg, apps: AppOpt = None, callers: CallerOpt = None, url: UrlOpt = None, json: JsonOpt = False
) -> None:
    """Accept a pending trust request: the cluster becomes trusted."""
    body = {"cluster_key": key, "apps": apps or ["*"], "callers": callers or ["*"]}
    _show_entry(_call(url, "AcceptTrust", body), json)


@app.command()
@reports_errors
def reject(key: KeyArg, url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Drop a pending trust request."""
    result = _call(url, "RejectTrust", {"cluster_key": key})
    print_json(result) if json else console.print(literal(f"rejected {result['rejected']}"))


@app.command("request-trust")
@reports_errors
def request_trust(
    peer: Annotated[str, typer.Argument(help="A node URL of the other cluster.")],
    message: Annotated[str, typer.Option(help="Shown to its admins.")] = "",
    url: UrlOpt = None,
    json: JsonOpt = False,
) -> None:
    """Ask another cluster to trust this one."""
    result = _call(url, "RequestTrust", {"url": peer, "message": message})
    print_json(result) if json else console.print(result["status"])


@app.command()
@reports_errors
def refresh(url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Pull every configured peer's announcement now."""
    result = _call(url, "FederationRefresh", {})
    if json:
        print_json(result)
        return
    console.print(f"pulled {len(result['pulled'])}")
    for e in result["errors"]:
        console.print(literal(e))


@app.command()
@reports_errors
def sync(
    resource: Annotated[str, typer.Argument(help="The resource's name.")],
    from_cluster: Annotated[str, typer.Option("--from", help="A trusted cluster's key or announced name.")],
    url: UrlOpt = None,
    json: JsonOpt = False,
) -> None:
    """Pull a resource's objects (BLAKE3-verified) and heads from a trusted cluster."""
    result = _call(url, "FederationSync", {"resource": resource, "from_cluster": from_cluster})
    if json:
        print_json(result)
        return
    console.print(literal(f"fetched {result['fetched']}, had {result['skipped']}, heads {result['heads']}"))
