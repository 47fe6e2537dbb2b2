"""``aspen plugin …``: sign, install and manage WASM plugins on a cluster.

``keygen``/``sign``/``verify`` work offline on files; every other command
talks to a node. A change made through one node reaches every node (they
reconcile from the install records), and the command returns once the
answering node serves it — or prints why it did not come up.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer
from rich.table import Table
from rich.text import Text

from aspen.cli.common import (
    JsonOpt,
    UrlOpt,
    connect,
    console,
    fail,
    literal,
    print_json,
    reports_errors,
)
from aspen.cli.plugin_files import ManifestOpt, keygen, plugin_module, sign, verify
from aspen.errors import ErrorCode
from aspen.plugins import requests as r
from aspen.plugins.lifecycle import PluginStatus
from aspen.plugins.signing import (
    public_key_hex,
    read_key,
)
from aspen.rpc.catalog import PluginReloadResult

app = typer.Typer(help="Install, sign and manage WASM plugins.", no_args_is_help=True)
trust_app = typer.Typer(help="The cluster's trusted plugin authors.", no_args_is_help=True)
app.add_typer(trust_app, name="trust")

WaitOpt = Annotated[float, typer.Option("--wait", help="Seconds to wait for the node to serve the change.")]


def _csv(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def _dependency(spec: str) -> dict[str, Any]:
    """``name``, ``name>=1.2.0`` or ``name?`` (optional)."""
    optional = spec.endswith("?")
    spec = spec.rstrip("?")
    name, _, minimum = spec.partition(">=")
    return {"name": name.strip(), "min_version": minimum.strip() or None, "optional": optional}


def _status_line(s: PluginStatus) -> str:
    text = s.state + (f" {s.version}" if s.version else "")
    if s.wanted_version and s.wanted_version != s.version:
        text += f" (wants {s.wanted_version})"
    draining = [v.version for v in s.retiring if v.state == "stopping"]
    if draining:
        text += f" (+{', '.join(draining)} stopping)"
    if s.error:
        text += f" — {s.error.code}: {s.error.message}"
    return text


def _retiring_line(s: PluginStatus) -> str:
    """The versions retired on one node, e.g. ``1.0.0 stopping (1 in flight), 0.9.0 stopped``."""
    return ", ".join(
        f"{v.version} {v.state}" + (f" ({v.in_flight} in flight)" if v.state == "stopping" else "") for v in s.retiring
    )


def _print_change(result: r.PluginChangeResult, json: bool) -> None:
    if json:
        print_json(result)
        return
    state = "enabled" if result.enabled else "disabled"
    console.print(literal(f"{result.name} {result.version} (generation {result.generation}, {state})"))
    if result.status is not None:
        console.print(literal(f"  this node: {_status_line(result.status)}"))
    if result.affected:
        console.print(literal(f"  also changed: {', '.join(result.affected)}"))
    if result.status is not None and result.status.error is not None:
        raise typer.Exit(1)


# --- offline: keys and signatures (aspen.cli.plugin_files) ---------------------------

for _command in (keygen, sign, verify):
    app.command()(reports_errors(_command))


# --- install / upgrade -------------------------------------------------------------------


@app.command("install")
@app.command("upgrade")
@reports_errors
def install(
    ctx: typer.Context,
    wasm: Path,
    manifest: ManifestOpt = None,
    name: Annotated[str | None, typer.Option(help="Plugin name (overrides plugin.json).")] = None,
    handles: Annotated[str | None, typer.Option(help="Request types, comma-separated.")] = None,
    priority: Annotated[int | None, typer.Option(help="900-999; default 950.")] = None,
    plugin_version: Annotated[str | None, typer.Option("--plugin-version", help="Semver; default 0.1.0.")] = None,
    kv_prefixes: Annotated[str | None, typer.Option(help="KV prefixes, comma-separated.")] = None,
    permissions: Annotated[str | None, typer.Option(help="Granted permissions, comma-separated (kv_read,…).")] = None,
    depends: Annotated[
        str | None, typer.Option(help="Dependencies: name, name>=1.2.0, name? (optional); comma-separated.")
    ] = None,
    app_id: Annotated[str | None, typer.Option(help="App this plugin provides.")] = None,
    description: Annotated[str | None, typer.Option()] = None,
    author: Annotated[str | None, typer.Option()] = None,
    tags: Annotated[str | None, typer.Option(help="Comma-separated.")] = None,
    min_api_version: Annotated[str | None, typer.Option(help="Lowest host API version it needs.")] = None,
    memory_limit: Annotated[int | None, typer.Option(help="Bytes; capped by the node.")] = None,
    timeout_ms: Annotated[int | None, typer.Option(help="Per call; capped by the node.")] = None,
    key: Annotated[Path | None, typer.Option("--sign-key", help="Sign the module with this key file first.")] = None,
    force: Annotated[bool, typer.Option(help="upgrade: allow a version that is not newer.")] = False,
    wait: WaitOpt = r.DEFAULT_WAIT_SECONDS,
    url: UrlOpt = None,
    json: JsonOpt = False,
) -> None:
    """Install (or upgrade) a plugin from a module or a plugin directory; flags override plugin.json."""
    upgrade = ctx.info_name == "upgrade"
    limits = {k: v for k, v in (("memory_bytes", memory_limit), ("timeout_ms", timeout_ms)) if v is not None}
    flags: dict[str, Any] = {
        "name": name,
        "handles": _csv(handles),
        "priority": priority,
        "version": plugin_version,
        "kv_prefixes": _csv(kv_prefixes),
        "permissions": None if permissions is None else {p: True for p in _csv(permissions) or []},
        "dependencies": None if depends is None else [_dependency(d) for d in _csv(depends) or []],
        "app_id": app_id,
        "description": description,
        "author": author,
        "tags": _csv(tags),
        "min_api_version": min_api_version,
        "limits": limits or None,
    }
    with tempfile.TemporaryDirectory() as tmp:
        m, module = plugin_module(wasm, manifest, flags, key, Path(tmp))
        with connect(url) as client:
            uploaded = client.upload_blob(module)
            body = r.PluginInstall(manifest=m, wasm_hash=uploaded.hash, force=force, wait_seconds=wait)
            kind = "PluginUpgrade" if upgrade else "PluginInstall"
            result = msgspec.convert(client.call(kind, _body(body), timeout=wait + 30), r.PluginChangeResult)
    _print_change(result, json)


def _body(struct: msgspec.Struct) -> dict[str, Any]:
    return msgspec.to_builtins(struct)


def _call(url: str | None, kind: str, body: msgspec.Struct, wait: float = 0.0) -> Any:
    _, _, response = r.LIFECYCLE_REQUESTS[kind]
    with connect(url) as client:
        return msgspec.convert(client.call(kind, _body(body), timeout=wait + 30), response)


# --- other changes ------------------------------------------------------------------------


@app.command()
@reports_errors
def rollback(
    name: str,
    to: Annotated[str | None, typer.Option("--to", help="The version to go back to; default the previous one.")] = None,
    wait: WaitOpt = r.DEFAULT_WAIT_SECONDS,
    url: UrlOpt = None,
    json: JsonOpt = False,
) -> None:
    """Go back to an earlier version (the previous ones are kept)."""
    _print_change(_call(url, "PluginRollback", r.PluginRollback(name=name, version=to, wait_seconds=wait), wait), json)


@app.command()
@reports_errors
def enable(name: str, wait: WaitOpt = r.DEFAULT_WAIT_SECONDS, url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Enable a plugin on every node."""
    _print_change(_call(url, "PluginEnable", r.PluginEnable(name=name, wait_seconds=wait), wait), json)


@app.command()
@reports_errors
def disable(
    name: str,
    cascade: Annotated[bool, typer.Option(help="Also disable the plugins that depend on it.")] = False,
    wait: WaitOpt = r.DEFAULT_WAIT_SECONDS,
    url: UrlOpt = None,
    json: JsonOpt = False,
) -> None:
    """Disable a plugin on every node (refused while enabled plugins depend on it)."""
    body = r.PluginDisable(name=name, cascade=cascade, wait_seconds=wait)
    _print_change(_call(url, "PluginDisable", body, wait), json)


@app.command()
@reports_errors
def remove(
    name: str,
    force: Annotated[bool, typer.Option(help="Remove although others depend on it (they stop loading).")] = False,
    cascade: Annotated[bool, typer.Option(help="Remove the plugins that depend on it too.")] = False,
    wait: WaitOpt = r.DEFAULT_WAIT_SECONDS,
    url: UrlOpt = None,
    json: JsonOpt = False,
) -> None:
    """Uninstall a plugin (refused while other plugins depend on it)."""
    result = _call(
        url, "PluginRemove", r.PluginRemove(name=name, force=force, cascade=cascade, wait_seconds=wait), wait
    )
    print_json(result) if json else console.print(literal(f"removed {', '.join(result.removed)}"))


@app.command()
@reports_errors
def reload(
    name: Annotated[
        str | None, typer.Argument(help="One plugin (restarted on every node); none: retry on this node.")
    ] = None,
    url: UrlOpt = None,
    json: JsonOpt = False,
) -> None:
    """Restart a plugin blue/green everywhere, or force this node to reconcile."""
    with connect(url) as client:
        result: PluginReloadResult = client.plugin_reload(name)
    if json:
        print_json(result)
    else:
        console.print(literal(result.message))
    if not result.is_success:
        raise typer.Exit(1)


# --- reading ------------------------------------------------------------------------------


@app.command("list")
@reports_errors
def list_(url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Installed plugins with their state, health and metrics on the answering node."""
    result: r.PluginListResult = _call(url, "PluginList", r.PluginList())
    if json:
        print_json(result)
        return
    table = Table("name", "version", "enabled", "prio", "state", "calls", "errors", "p50 ms", "p99 ms", "in flight")
    for p in result.plugins:
        s, mt = p.status, p.status.metrics
        table.add_row(
            literal(p.name), literal(p.version), "yes" if p.enabled else "no", str(p.priority), literal(_status_line(s)),
            str(mt.calls), str(mt.errors), f"{mt.p50_ms:.2f}", f"{mt.p99_ms:.2f}", str(mt.in_flight),
        )  # fmt: skip
    console.print(table)


@app.command()
@reports_errors
def info(name: str, url: UrlOpt = None, json: JsonOpt = False) -> None:
    """A plugin's manifest, versions kept, dependents, and its state on every node."""
    result: r.PluginInfoResult = _call(url, "PluginInfo", r.PluginInfo(name=name))
    if json:
        print_json(result)
        return
    m = result.record.manifest
    state = "enabled" if m.enabled else "disabled"
    console.print(Text.assemble((m.name, "bold"), f" {m.version}  generation {result.record.generation}  {state}"))
    console.print(literal(f"  handles: {', '.join(m.handles)}  priority {m.priority}"))
    console.print(literal(f"  {'bundle' if m.runtime == 'process' else 'module'}: {m.wasm_hash}"))
    if m.runtime == "process":
        console.print(literal(f"  command: {' '.join(m.command)}  (cwd {m.cwd})"))
    console.print(literal(f"  signed by: {m.signature.author_pubkey if m.signature else '(unsigned)'}"))
    console.print(literal(f"  kept for rollback: {', '.join(h.version for h in result.record.history) or '-'}"))
    console.print(literal(f"  dependents: {', '.join(result.dependents) or '-'}"))
    mt = result.status.metrics
    console.print(
        literal(
            f"  this node: {_status_line(result.status)}; calls {mt.calls}, errors {mt.errors}, "
            f"p50 {mt.p50_ms:.2f} ms, p99 {mt.p99_ms:.2f} ms, in flight {mt.in_flight}"
        )
    )
    if result.status.retiring:
        console.print(literal(f"  retired on this node: {_retiring_line(result.status)}"))
    for s in result.nodes:
        retired = f"; retired: {_retiring_line(s)}" if s.retiring else ""
        console.print(literal(f"  node {s.node_id}: {_status_line(s)}{retired}"))
    for s in (result.status, *result.nodes):
        if s.stderr:
            console.print(literal(f"  last stderr on {s.node_id}:"))
            for line in s.stderr:
                console.print(literal(f"    {line}"))


@app.command()
@reports_errors
def deps(
    name: Annotated[str | None, typer.Argument(help="One plugin; none: the load order.")] = None,
    reverse: Annotated[bool, typer.Option(help="Show what depends on NAME.")] = False,
    url: UrlOpt = None,
    json: JsonOpt = False,
) -> None:
    """The load order, or one plugin's dependencies (--reverse: its dependents)."""
    result: r.PluginDepsResult = _call(url, "PluginDeps", r.PluginDeps(name=name, reverse=reverse))
    if json:
        print_json(result)
        return
    if name is None:
        console.print(literal("load order: " + (" → ".join(result.load_order) or "(none)")))
    elif reverse:
        console.print(literal(f"depend on {name}: {', '.join(result.dependents) or '-'}"))
    else:
        for d in result.dependencies:
            need = f">= {d.min_version}" if d.min_version else "any"
            mark = "ok" if d.is_satisfied else "MISSING"
            console.print(
                literal(f"{d.name} {need}{' (optional)' if d.optional else ''}: {d.installed_version or '-'} {mark}")
            )
    for p in result.problems:
        console.print(literal(f"{p.plugin}: {p.code}: {p.message}"), style="red")


@app.command()
@reports_errors
def check(url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Re-validate every installed plugin (rules, dependencies, signatures, trust); exit 1 if any fails."""
    result: r.PluginCheckResult = _call(url, "PluginCheck", r.PluginCheck())
    if json:
        print_json(result)
    else:
        for p in result.problems:
            console.print(literal(f"{p.plugin}: {p.code}: {p.message}"))
        console.print(literal(f"{result.checked} plugin(s) checked: {'valid' if result.is_valid else 'INVALID'}"))
    if not result.is_valid:
        raise typer.Exit(1)


# --- trust --------------------------------------------------------------------------------


@trust_app.command("add")
@reports_errors
def trust_add(
    pubkey: Annotated[str | None, typer.Argument(help="Author public key (64 hex).")] = None,
    name: Annotated[str, typer.Option(help="Who this key belongs to.")] = "",
    key_file: Annotated[Path | None, typer.Option(help="Trust the public half of this signing key file.")] = None,
    url: UrlOpt = None,
    json: JsonOpt = False,
) -> None:
    """Trust an author's key cluster-wide."""
    if (pubkey is None) == (key_file is None):
        raise fail(ErrorCode.INVALID_ARGUMENT, "give a PUBKEY or --key-file")
    key = pubkey if pubkey is not None else public_key_hex(read_key(key_file))  # type: ignore[arg-type]
    result = _call(url, "PluginTrustAdd", r.PluginTrustAdd(pubkey=key, name=name))
    print_json(result) if json else console.print(literal(f"trusted {result.pubkey}"))


@trust_app.command("remove")
@reports_errors
def trust_remove(pubkey: str, url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Stop trusting an author (their plugins no longer load anywhere)."""
    result = _call(url, "PluginTrustRemove", r.PluginTrustRemove(pubkey=pubkey))
    print_json(result) if json else console.print(literal(f"removed {result.pubkey}"))


@trust_app.command("list")
@reports_errors
def trust_list(url: UrlOpt = None, json: JsonOpt = False) -> None:
    """The trusted author keys."""
    result: r.PluginTrustListResult = _call(url, "PluginTrustList", r.PluginTrustList())
    if json:
        print_json(result)
        return
    for a in result.authors:
        console.print(literal(f"{a.pubkey}  {a.name}"))
