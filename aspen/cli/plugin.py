"""``aspen plugin …``: sign, install and manage WASM plugins on a cluster.

``keygen``/``sign``/``verify`` work offline on files; every other command
talks to a node. A change made through one node reaches every node (they
reconcile from the install records), and the command returns once the
answering node serves it — or prints why it did not come up.
"""

from __future__ import annotations

import json as jsonlib
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
from aspen.errors import AspenError, ErrorCode
from aspen.plugins import bundle
from aspen.plugins import requests as r
from aspen.plugins.build import WASM_NAME
from aspen.plugins.lifecycle import PluginStatus
from aspen.plugins.manifest import MAX_MANIFEST_DEPTH, PluginManifest, PluginSignature
from aspen.plugins.rules import FILE, check_manifest
from aspen.plugins.signing import (
    default_key_path,
    generate_key,
    public_key_hex,
    read_key,
    sign_wasm,
    verify_wasm,
    write_key,
)
from aspen.rpc.catalog import PluginReloadResult
from aspen.rpc.nesting import check_depth

app = typer.Typer(help="Install, sign and manage WASM plugins.", no_args_is_help=True)
trust_app = typer.Typer(help="The cluster's trusted plugin authors.", no_args_is_help=True)
app.add_typer(trust_app, name="trust")

KeyOpt = Annotated[
    Path | None, typer.Option("--key", help="Signing key file. Default ~/.config/aspen/plugin-signing-key.")
]
ManifestOpt = Annotated[Path | None, typer.Option("--manifest", help="plugin.json of the module.")]
WaitOpt = Annotated[float, typer.Option("--wait", help="Seconds to wait for the node to serve the change.")]


def _csv(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
        check_depth(text, max_depth=MAX_MANIFEST_DEPTH, code=ErrorCode.INVALID_MANIFEST)
        doc = jsonlib.loads(text)
    except OSError as exc:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"cannot read {path}: {exc.strerror}") from None
    except jsonlib.JSONDecodeError as exc:
        raise AspenError(ErrorCode.INVALID_MANIFEST, f"{path} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise AspenError(ErrorCode.INVALID_MANIFEST, f"{path} must hold a JSON object")
    return doc


def _read_wasm(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"cannot read {path}: {exc.strerror}") from None


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


# --- offline: keys and signatures ---------------------------------------------------


@app.command()
@reports_errors
def keygen(output: Annotated[Path | None, typer.Option(help="Where to write the key.")] = None) -> None:
    """Create an Ed25519 signing key (never overwrites one); prints the public key."""
    path = output or default_key_path()
    key = generate_key()
    write_key(path, key)
    console.print(literal(f"wrote {path}"))
    print(public_key_hex(key))


@app.command()
@reports_errors
def sign(wasm: Path, key: KeyOpt = None, manifest: ManifestOpt = None, json: JsonOpt = False) -> None:
    """Sign WASM or a plugin directory (its module or bundle); with --manifest
    (a directory: its plugin.json), write the signature into that plugin.json."""
    data, manifest = _signable(wasm, manifest)
    sig = sign_wasm(read_key(key or default_key_path()), data)
    if manifest is not None:
        doc = _read_json(manifest)
        doc["signature"] = msgspec.to_builtins(sig)
        manifest.write_text(jsonlib.dumps(doc, indent=2) + "\n")
    if json or manifest is None:
        print_json(sig)
    else:
        console.print(literal(f"signed {wasm.name} as {sig.author_pubkey} into {manifest}"), soft_wrap=True)


@app.command()
@reports_errors
def verify(
    wasm: Path,
    manifest: ManifestOpt = None,
    signature: Annotated[Path | None, typer.Option(help="A signature JSON file (instead of --manifest).")] = None,
    author: Annotated[str | None, typer.Option(help="Also require this author key (hex).")] = None,
) -> None:
    """Check the signature of a module or a plugin directory (from plugin.json or a signature file)."""
    data, manifest = _signable(wasm, manifest if signature is None else None)
    source = manifest or signature
    if source is None:
        raise fail(ErrorCode.INVALID_ARGUMENT, "give --manifest or --signature")
    doc = _read_json(source)
    raw = doc.get("signature") if manifest is not None else doc
    try:
        sig = None if raw is None else msgspec.convert(raw, PluginSignature)
    except msgspec.ValidationError as exc:
        raise fail(ErrorCode.PLUGIN_SIGNATURE_MALFORMED, str(exc)) from None
    verify_wasm(sig, data, plugin=str(doc.get("name", "")))
    assert sig is not None
    if author is not None and author != sig.author_pubkey:
        raise fail(ErrorCode.PLUGIN_SIGNATURE_INVALID, f"signed by {sig.author_pubkey}, not by {author}")
    console.print(literal(f"OK: signed by {sig.author_pubkey}"))


# --- install / upgrade -------------------------------------------------------------------


def build_manifest(wasm: bytes, manifest: Path | None, flags: dict[str, Any], key: Path | None) -> PluginManifest:
    """plugin.json (if any) with the flags on top; signed with ``key`` when given."""
    doc = _read_json(manifest) if manifest is not None else {}
    doc.update({k: v for k, v in flags.items() if v is not None})
    doc.setdefault("version", "0.1.0")
    doc.pop("wasm_hash", None)
    missing = [f for f in ("name", "handles") if not doc.get(f)]
    if missing:
        raise AspenError(ErrorCode.INVALID_MANIFEST, f"give {' and '.join('--' + f for f in missing)} or a --manifest")
    try:
        m = msgspec.convert(doc, PluginManifest)
    except msgspec.ValidationError as exc:
        raise AspenError(ErrorCode.INVALID_MANIFEST, f"plugin manifest: {exc}") from None
    if key is not None:
        m = msgspec.structs.replace(m, signature=sign_wasm(read_key(key), wasm))
    return m


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
        m, module = _module(wasm, manifest, flags, key, Path(tmp))
        with connect(url) as client:
            uploaded = client.upload_blob(module)
            body = r.PluginInstall(manifest=m, wasm_hash=uploaded.hash, force=force, wait_seconds=wait)
            kind = "PluginUpgrade" if upgrade else "PluginInstall"
            result = msgspec.convert(client.call(kind, _body(body), timeout=wait + 30), r.PluginChangeResult)
    _print_change(result, json)


def _module(
    path: Path, manifest: Path | None, flags: dict[str, Any], key: Path | None, tmp: Path
) -> tuple[PluginManifest, Path]:
    """The manifest and the file to upload: ``path`` itself (a module), or
    for a plugin directory its ``plugin.json`` (unless --manifest) and its
    ``plugin.wasm``, or — runtime ``process`` — its bundle, written to ``tmp``."""
    if not path.is_dir():
        return build_manifest(_read_wasm(path), manifest, flags, key), path
    m = build_manifest(b"", manifest or path / "plugin.json", flags, None)
    data = _dir_module(path, m)
    if key is not None:
        m = msgspec.structs.replace(m, signature=sign_wasm(read_key(key), data))
    module = tmp / "module"
    module.write_bytes(data)
    return m, module


def _dir_module(path: Path, m: PluginManifest) -> bytes:
    """A plugin directory's module: its bundle (runtime ``process``) or its ``plugin.wasm``."""
    if m.runtime != "process":
        return _read_wasm(path / WASM_NAME)
    check_manifest(m, at=FILE)
    return bundle.pack(path, m)


def _signable(path: Path, manifest: Path | None) -> tuple[bytes, Path | None]:
    """The bytes a signature covers, and the plugin.json (a directory's own by default)."""
    if not path.is_dir():
        return _read_wasm(path), manifest
    manifest = manifest or path / "plugin.json"
    return _dir_module(path, build_manifest(b"", manifest, {}, None)), manifest


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
