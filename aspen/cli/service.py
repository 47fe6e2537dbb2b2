"""``aspen service …``: the service registry app (the ``service-registry``
plugin, docs/service-registry.md): register, heartbeat, deregister,
discover, list, get, set-health and watch an instance set."""

from __future__ import annotations

import json as json_lib
import sys
import time
from typing import Annotated, Any

import typer

from aspen.cli.common import JsonOpt, UrlOpt, connect, console, literal, print_json, reports_errors
from aspen.cli.kv import follow
from aspen.client import SyncClient
from aspen.errors import AspenError, ErrorCode
from aspen.storage.records import WatchEvent

app = typer.Typer(help="The service registry: instances on a TTL, discovery, watches.", no_args_is_help=True)
PREFIX = "__service:"
MAX_LIMIT = 1000

TagOpt = Annotated[list[str] | None, typer.Option("--tag", help="A tag (repeat for more).")]
TokenArg = Annotated[int, typer.Argument(help="The fencing token register printed.")]


def _meta(items: list[str] | None) -> dict[str, str] | None:
    if not items:
        return None
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise AspenError(ErrorCode.SERVICE_METADATA_INVALID, f"--meta takes KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def _line(i: dict[str, Any]) -> str:
    tags = ",".join(i["tags"]) or "-"
    return f"{i['instance']}\t{i['address']}\t{i['health']}\t{i['version'] or '-'}\t{tags}\tweight={i['weight']}"


def _send(url: str | None, type_: str, body: dict[str, Any]) -> dict[str, Any]:
    with connect(url) as client:
        return client.call(type_, {k: v for k, v in body.items() if v is not None})


@app.command()
@reports_errors
def register(
    service: str, instance: str,
    address: Annotated[str, typer.Option(help="Where the instance is reached (host:port, URL …).")],
    ttl: Annotated[int, typer.Option(help="Seconds the instance lives without a heartbeat.")] = 30,
    tag: TagOpt = None, version: Annotated[str | None, typer.Option(help="The instance's version.")] = None,
    weight: Annotated[int | None, typer.Option(help="Relative weight 0..10000 (default 100).")] = None,
    meta: Annotated[list[str] | None, typer.Option("--meta", help="KEY=VALUE metadata (repeat).")] = None,
    health: Annotated[str | None, typer.Option(help="healthy (default), unhealthy or unknown.")] = None,
    url: UrlOpt = None, json: JsonOpt = False,
) -> None:  # fmt: skip
    """Register INSTANCE of SERVICE; prints its fencing token."""
    body = {"service": service, "instance": instance, "address": address, "ttl": ttl, "tags": tag,
            "version": version, "weight": weight, "metadata": _meta(meta), "health": health}  # fmt: skip
    r = _send(url, "ServiceRegister", body)
    print_json(r) if json else console.print(r["fencing_token"])


@app.command()
@reports_errors
def heartbeat(
    service: str, instance: str, token: TokenArg,
    every: Annotated[float, typer.Option(help="Keep heartbeating every this many seconds (0: once).")] = 0.0,
    url: UrlOpt = None, json: JsonOpt = False,
) -> None:  # fmt: skip
    """Keep INSTANCE alive for another TTL (with --every, until Ctrl-C)."""
    body = {"service": service, "instance": instance, "fencing_token": token}
    with connect(url) as client:
        try:
            while True:
                r = client.call("ServiceHeartbeat", body)
                print_json(r) if json else console.print(f"alive for {r['ttl']}s")
                sys.stdout.flush()
                if every <= 0:
                    return
                time.sleep(every)
        except KeyboardInterrupt:
            pass


@app.command()
@reports_errors
def deregister(service: str, instance: str, token: TokenArg, url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Remove INSTANCE of SERVICE now (its fencing token must be current)."""
    r = _send(url, "ServiceDeregister", {"service": service, "instance": instance, "fencing_token": token})
    print_json(r) if json else console.print(literal(f"deregistered {service}/{instance}"))


@app.command("set-health")
@reports_errors
def set_health(
    service: str, instance: str, token: TokenArg, health: str, url: UrlOpt = None, json: JsonOpt = False
) -> None:
    """Set INSTANCE's health: healthy, unhealthy or unknown."""
    body = {"service": service, "instance": instance, "fencing_token": token, "health": health}
    r = _send(url, "ServiceUpdateHealth", body)
    print_json(r) if json else console.print(literal(_line(r)))


def _discover(client: SyncClient, body: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    """Every matching instance up to ``limit``, following the continuation."""
    found: list[dict[str, Any]] = []
    continuation = None
    while len(found) < limit:
        page = {**body, "limit": min(MAX_LIMIT, limit - len(found)), "continuation": continuation}
        r = client.call("ServiceDiscover", {k: v for k, v in page.items() if v is not None})
        found += r["instances"]
        continuation = r["continuation"]
        if not r["truncated"] or continuation is None:
            break
    return found


@app.command()
@reports_errors
def discover(
    service: str, tag: TagOpt = None,
    health: Annotated[str | None, typer.Option(help="Only instances with this health.")] = None,
    version_prefix: Annotated[str | None, typer.Option(help="Only versions starting with this.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many instances.")] = MAX_LIMIT,
    url: UrlOpt = None, json: JsonOpt = False,
) -> None:  # fmt: skip
    """Instances of SERVICE (all --tag must match): INSTANCE ADDRESS HEALTH VERSION TAGS."""
    body = {"service": service, "tags": tag, "health": health, "version_prefix": version_prefix}
    with connect(url) as client:
        found = _discover(client, body, limit)
    if json:
        print_json({"instances": found})
    else:
        for i in found:
            console.print(literal(_line(i)))


@app.command("list")
@reports_errors
def list_(url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Services with at least one live instance."""
    r = _send(url, "ServiceList", {})
    if json:
        print_json(r)
    else:
        for name in r["services"]:
            console.print(literal(name))


@app.command()
@reports_errors
def get(service: str, instance: str, url: UrlOpt = None, json: JsonOpt = False) -> None:
    """One instance: INSTANCE ADDRESS HEALTH VERSION TAGS (--json: everything)."""
    r = _send(url, "ServiceGetInstance", {"service": service, "instance": instance})
    print_json(r) if json else console.print(literal(_line(r)))


@app.command()
@reports_errors
def watch(
    service: str,
    count: Annotated[int | None, typer.Option(help="Stop after this many changes.")] = None,
    url: UrlOpt = None, json: JsonOpt = False,
) -> None:  # fmt: skip
    """Follow SERVICE's instances: '+ INSTANCE ADDRESS HEALTH' when one registers or changes, '- INSTANCE' when it goes (deregistered or expired). Ctrl-C stops."""
    prefix = f"{PREFIX}{service}:"

    def show(event: WatchEvent) -> None:
        instance = event.kv.key[len(prefix) :]
        record = _record(event.kv.value) if event.type == "put" else {}
        if json:
            print_json({"revision": event.revision, "type": event.type, "instance": instance, **record})
        elif event.type == "put":
            console.print(literal(f"+ {instance} {record.get('address', '?')} {record.get('health', '?')}"))
        else:
            console.print(literal(f"- {instance}"))

    follow(url, prefix, show, count=count)


def _record(value: bytes) -> dict[str, Any]:
    try:
        record = json_lib.loads(value)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}
