"""``aspen token …``: create, delegate, inspect and revoke capability tokens,
and remember which token a node URL takes.

Flags build the Datalog: ``--read app/`` is ``right("kv:read", "app/")``,
``--submit build`` is ``right("job:submit", "build")``, ``--right OP=RES``
any other. ``delegate`` works offline but for the cluster's public key,
which it asks the node for (``--public-key`` skips that).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import biscuit_auth as bz
import typer

from aspen.auth.requests import TokenCreateResult, TokenVerifyResult
from aspen.auth.tokens import Right, attenuate, parse_duration, read_facts, unverified
from aspen.cli.common import (
    JsonOpt,
    UrlOpt,
    connect,
    console,
    err_console,
    literal,
    print_json,
    reports_errors,
)
from aspen.client.async_client import resolve_urls
from aspen.client.credentials import forget, remember
from aspen.errors import AspenError, ErrorCode

app = typer.Typer(help="Capability tokens: create, delegate, inspect, revoke.", no_args_is_help=True)

Many = Annotated[list[str] | None, typer.Option()]
_FLAGS = {  # option name -> operation
    "read": "kv:read",
    "write": "kv:write",
    "delete": "kv:delete",
    "watch": "kv:watch",
    "submit": "job:submit",
    "call": "plugin:call",
}


def _token_arg(token: str) -> str:
    """TOKEN, ``-`` (stdin) or ``@FILE``."""
    if token == "-":
        return sys.stdin.read().strip()
    if token.startswith("@"):
        return Path(token[1:]).expanduser().read_text().strip()
    return token.strip()


def _rights(by_flag: dict[str, list[str] | None], generic: list[str] | None) -> list[Right]:
    rights = [Right(_FLAGS[flag], res) for flag, values in by_flag.items() for res in values or ()]
    for item in generic or ():
        op, sep, res = item.partition("=")
        if not sep:
            raise AspenError(ErrorCode.INVALID_ARGUMENT, f"--right takes OPERATION=RESOURCE, got {item!r}")
        rights.append(Right(op.strip(), res.strip()))
    return rights


@app.command()
@reports_errors
def create(
    read: Many = None,
    write: Many = None,
    delete: Many = None,
    watch: Many = None,
    submit: Many = None,
    call: Many = None,
    right: Annotated[list[str] | None, typer.Option(help="OPERATION=RESOURCE, e.g. blob:read=*")] = None,
    ttl: Annotated[str, typer.Option(help="Lifetime: 90s, 10m, 1h, 7d.")] = "1d",
    subject: Annotated[str | None, typer.Option(help="Who the token speaks for.")] = None,
    audience: Annotated[str | None, typer.Option(help="Cluster id it is valid for (default: this one).")] = None,
    url: UrlOpt = None,
    json: JsonOpt = False,
) -> None:
    """Mint a token holding the given rights (each must be one yours holds)."""
    rights = _rights(
        {"read": read, "write": write, "delete": delete, "watch": watch, "submit": submit, "call": call}, right
    )
    if not rights:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, "give at least one right (--read, --write, --submit, --right …)")
    body = {
        "rights": [{"operation": r.operation, "resource": r.resource} for r in rights],
        "subject": subject,
        "ttl_seconds": parse_duration(ttl),
        "audience": audience,
    }
    with connect(url) as client:
        result = TokenCreateResult(**client.call("TokenCreate", body))
    if json:
        print_json(result)
        return
    err_console.print(literal(f"subject {result.subject}, expires {result.expires_at or 'never'}"))
    sys.stdout.write(result.token + "\n")


def _public_key(token: str, given: str | None, url: str | None) -> bz.PublicKey:
    if given is None:
        with connect(url, token=token) as client:
            given = TokenVerifyResult(**client.call("TokenVerify", {})).public_key
    try:
        return bz.PublicKey.from_bytes(bytes.fromhex(given), bz.Algorithm.Ed25519)
    except (ValueError, bz.BiscuitValidationError):
        raise AspenError(ErrorCode.INVALID_ARGUMENT, "the public key is 64 hex characters (Ed25519)") from None


@app.command()
@reports_errors
def delegate(
    token: Annotated[str, typer.Argument(help="The token to narrow: TOKEN, - (stdin) or @FILE.")],
    only_read: Many = None,
    only_write: Many = None,
    only_delete: Many = None,
    only_watch: Many = None,
    only_submit: Many = None,
    only_call: Many = None,
    only_right: Annotated[list[str] | None, typer.Option(help="OPERATION=RESOURCE to keep.")] = None,
    only_type: Annotated[list[str] | None, typer.Option(help="Request types it may be used for.")] = None,
    ttl: Annotated[str | None, typer.Option(help="Expire after: 90s, 10m, 1h.")] = None,
    public_key: Annotated[
        str | None, typer.Option(help="The cluster's public key (hex); else asked of the node.")
    ] = None,
    url: UrlOpt = None,
) -> None:
    """Append a block that narrows TOKEN (it can never widen it)."""
    text = _token_arg(token)
    kept = _rights(
        {
            "read": only_read, "write": only_write, "delete": only_delete,
            "watch": only_watch, "submit": only_submit, "call": only_call,
        },
        only_right,
    )  # fmt: skip
    narrowed = attenuate(
        text,
        _public_key(text, public_key, url),
        rights=kept or None,
        ttl_seconds=parse_duration(ttl) if ttl else None,
        request_types=only_type or None,
    )
    sys.stdout.write(narrowed + "\n")


@app.command()
@reports_errors
def inspect(
    token: Annotated[str, typer.Argument(help="TOKEN, - (stdin) or @FILE.")],
    offline: Annotated[bool, typer.Option(help="Do not ask the node to verify it.")] = False,
    url: UrlOpt = None,
    json: JsonOpt = False,
) -> None:
    """Show a token's blocks, expiry and revocation ids, and whether the node accepts it."""
    text = _token_arg(token)
    facts = read_facts(unverified(text))
    verdict: dict[str, object] = {"checked": False}
    if not offline:
        try:
            with connect(url) as client:
                result = TokenVerifyResult(**client.call("TokenVerify", {"token": text}))
            verdict = {"checked": True, "is_valid": result.is_valid, "code": result.code, "message": result.message,
                       "subject": result.subject, "cluster_id": result.cluster_id}  # fmt: skip
        except AspenError as exc:
            verdict = {"checked": False, "code": exc.code, "message": exc.message}
    expires = facts.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ") if facts.expires_at else None
    if json:
        print_json({"blocks": facts.blocks, "revocation_ids": facts.revocation_ids, "expires_at": expires,
                    "audiences": sorted(facts.audiences), "verification": verdict})  # fmt: skip
        return
    for i, (block, rid) in enumerate(zip(facts.blocks, facts.revocation_ids, strict=True)):
        console.print(literal(f"block {i}  (revocation id {rid[:16]}…)"), style="bold")
        console.print(literal(block.strip() or "(empty)"))
    console.print(literal(f"expires: {expires or 'never'}; audience: {', '.join(sorted(facts.audiences)) or 'any'}"))
    if verdict.get("is_valid"):
        console.print(literal(f"valid on this cluster, subject {verdict['subject']}"))
    elif verdict.get("checked"):
        console.print(literal(f"NOT valid here: {verdict['code']}: {verdict['message']}"))
    else:
        console.print(literal(f"not verified: {verdict.get('code', 'offline')}: {verdict.get('message', '')}"))


@app.command()
@reports_errors
def revoke(
    token: Annotated[str | None, typer.Argument(help="TOKEN, - (stdin) or @FILE.")] = None,
    id: Annotated[str | None, typer.Option("--id", help="A revocation id instead (cluster:admin).")] = None,
    url: UrlOpt = None,
) -> None:
    """Revoke a token and every token made from it, on every node."""
    if (token is None) == (id is None):
        raise AspenError(ErrorCode.INVALID_ARGUMENT, "give a TOKEN or --id")
    body = {"token": _token_arg(token)} if token is not None else {"revocation_id": id}
    with connect(url) as client:
        result = client.call("TokenRevoke", body)
    console.print(literal(f"revoked {result['revocation_id']}"))


@app.command()
@reports_errors
def login(
    token_file: Annotated[Path, typer.Option(help="File holding the token (e.g. DATA_DIR/admin.token).")],
    url: UrlOpt = None,
) -> None:
    """Remember that the node(s) at --url take the token in --token-file."""
    for node_url in resolve_urls(url):
        path = remember(node_url, token_file)
    console.print(literal(f"{', '.join(resolve_urls(url))} -> {token_file} (in {path})"))


@app.command()
@reports_errors
def logout(url: UrlOpt = None) -> None:
    """Forget the token remembered for the node(s) at --url."""
    for node_url in resolve_urls(url):
        found = forget(node_url)
        console.print(literal(f"{node_url}: {'forgotten' if found else 'no entry'}"))
