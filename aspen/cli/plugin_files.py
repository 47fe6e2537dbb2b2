"""``aspen plugin keygen | sign | verify`` and the files every plugin command
reads: a plugin.json, a module, or a plugin directory (its module, or for
runtime ``process`` its bundle). All of it works offline."""

from __future__ import annotations

import json as jsonlib
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer

from aspen.cli.common import JsonOpt, console, fail, literal, print_json
from aspen.errors import AspenError, ErrorCode
from aspen.plugins import bundle
from aspen.plugins.build import WASM_NAME
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
from aspen.rpc.nesting import check_depth

KeyOpt = Annotated[
    Path | None, typer.Option("--key", help="Signing key file. Default ~/.config/aspen/plugin-signing-key.")
]
ManifestOpt = Annotated[Path | None, typer.Option("--manifest", help="plugin.json of the module.")]


def read_json(path: Path) -> dict[str, Any]:
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


def read_wasm(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"cannot read {path}: {exc.strerror}") from None


def build_manifest(wasm: bytes, manifest: Path | None, flags: dict[str, Any], key: Path | None) -> PluginManifest:
    """plugin.json (if any) with the flags on top; signed with ``key`` when given."""
    doc = read_json(manifest) if manifest is not None else {}
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


def plugin_module(
    path: Path, manifest: Path | None, flags: dict[str, Any], key: Path | None, tmp: Path
) -> tuple[PluginManifest, Path]:
    """The manifest and the file to upload: ``path`` itself (a module), or
    for a plugin directory its ``plugin.json`` (unless --manifest) and its
    ``plugin.wasm``, or — runtime ``process`` — its bundle, written to ``tmp``."""
    if not path.is_dir():
        return build_manifest(read_wasm(path), manifest, flags, key), path
    m = build_manifest(b"", manifest or path / "plugin.json", flags, None)
    data = dir_module(path, m)
    if key is not None:
        m = msgspec.structs.replace(m, signature=sign_wasm(read_key(key), data))
    module = tmp / "module"
    module.write_bytes(data)
    return m, module


def dir_module(path: Path, m: PluginManifest) -> bytes:
    """A plugin directory's module: its bundle (runtime ``process``) or its ``plugin.wasm``."""
    if m.runtime != "process":
        return read_wasm(path / WASM_NAME)
    check_manifest(m, at=FILE)
    return bundle.pack(path, m)


def signable(path: Path, manifest: Path | None) -> tuple[bytes, Path | None]:
    """The bytes a signature covers, and the plugin.json (a directory's own by default)."""
    if not path.is_dir():
        return read_wasm(path), manifest
    manifest = manifest or path / "plugin.json"
    return dir_module(path, build_manifest(b"", manifest, {}, None)), manifest


# --- offline commands ------------------------------------------------------------


def keygen(output: Annotated[Path | None, typer.Option(help="Where to write the key.")] = None) -> None:
    """Create an Ed25519 signing key (never overwrites one); prints the public key."""
    path = output or default_key_path()
    key = generate_key()
    write_key(path, key)
    console.print(literal(f"wrote {path}"))
    print(public_key_hex(key))


def sign(wasm: Path, key: KeyOpt = None, manifest: ManifestOpt = None, json: JsonOpt = False) -> None:
    """Sign WASM or a plugin directory (its module or bundle); with --manifest
    (a directory: its plugin.json), write the signature into that plugin.json."""
    data, manifest = signable(wasm, manifest)
    sig = sign_wasm(read_key(key or default_key_path()), data)
    if manifest is not None:
        doc = read_json(manifest)
        doc["signature"] = msgspec.to_builtins(sig)
        manifest.write_text(jsonlib.dumps(doc, indent=2) + "\n")
    if json or manifest is None:
        print_json(sig)
    else:
        console.print(literal(f"signed {wasm.name} as {sig.author_pubkey} into {manifest}"), soft_wrap=True)


def verify(
    wasm: Path,
    manifest: ManifestOpt = None,
    signature: Annotated[Path | None, typer.Option(help="A signature JSON file (instead of --manifest).")] = None,
    author: Annotated[str | None, typer.Option(help="Also require this author key (hex).")] = None,
) -> None:
    """Check the signature of a module or a plugin directory (from plugin.json or a signature file)."""
    data, manifest = signable(wasm, manifest if signature is None else None)
    source = manifest or signature
    if source is None:
        raise fail(ErrorCode.INVALID_ARGUMENT, "give --manifest or --signature")
    doc = read_json(source)
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
