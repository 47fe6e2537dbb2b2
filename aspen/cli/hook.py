"""``aspen hook …``: attach an action (a job, a request, a webhook) to hook events."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from aspen.cli.common import JsonOpt, UrlOpt, connect, fail, literal, print_json, reports_errors
from aspen.cli.common import console as out

app = typer.Typer(help="Hooks: run a job, a request or a webhook on hook events.", no_args_is_help=True)


def _send(url: str | None, request_type: str, body: dict[str, Any]) -> dict[str, Any]:
    with connect(url) as client:
        return client.call(request_type, body)


@app.command()
@reports_errors
def add(
    name: str,
    pattern: Annotated[str, typer.Option(help="Topics, NATS-style (hooks.kv.>, hooks.job.*).")] = "hooks.kv.write_committed",
    prefix: Annotated[str, typer.Option(help="Only KV keys under this prefix (which the token may read or watch).")] = "",
    job: Annotated[str | None, typer.Option("--job", help="Submit a job: shell:COMMAND (the event in ASPEN_HOOK_EVENT).")] = None,
    call: Annotated[str | None, typer.Option("--call", help="Send this request type, the event as its body.")] = None,
    webhook: Annotated[str | None, typer.Option("--webhook", help="POST the event, signed, to this URL.")] = None,
    mode: Annotated[str, typer.Option(help="direct, or job: through the job system's retries and dead-letter state.")] = "direct",
    timeout_ms: Annotated[int, typer.Option(help="Per attempt.")] = 5000,
    retries: Annotated[int, typer.Option(help="Retries after the first attempt (direct or job).")] = 3,
    backoff_ms: Annotated[int, typer.Option(help="Before the first retry; doubled per retry, jittered, capped at 60 s.")] = 1000,
    url: UrlOpt = None, json: JsonOpt = False,
) -> None:  # fmt: skip
    """Add hook NAME with one action; prints the webhook signing key (shown only now)."""
    actions = [(k, t) for k, t in (("job", job), ("call", call), ("webhook", webhook)) if t is not None]
    if len(actions) != 1:
        raise fail("INVALID_ARGUMENT", "give exactly one of --job, --call, --webhook")
    kind, target = actions[0]
    body = {
        "name": name, "pattern": pattern, "prefix": prefix, "action": {"kind": kind, "target": target},
        "mode": mode, "timeout_ms": timeout_ms, "retries": retries, "backoff_ms": backoff_ms,
    }  # fmt: skip
    result = _send(url, "HookAdd", body)
    if json:
        print_json(result)
        return
    typer.echo(f"added {name}")
    typer.echo(f"signing key (shown once): {result['signing_key']}")


@app.command("list")
@reports_errors
def list_(url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Your hooks (every hook, with cluster:admin)."""
    hooks = _send(url, "HookList", {})["hooks"]
    if json:
        print_json(hooks)
        return
    for h in hooks:
        action = h["action"]
        out.print(
            literal(
                f"{h['name']}\t{h['pattern']}\t{h['prefix'] or '-'}\t{action['kind']}:{action['target']}\t{h['mode']}"
            )
        )


@app.command()
@reports_errors
def remove(name: str, url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Remove hook NAME (its cursor and counts go with it)."""
    result = _send(url, "HookRemove", {"name": name})
    print_json(result) if json else typer.echo(f"removed {result['name']}")


@app.command()
@reports_errors
def metrics(name: Annotated[str | None, typer.Argument()] = None, url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Delivered, failed (direct mode: after its retries, no dead letter) and dropped events per hook, and the newest failure's reason."""
    hooks = _send(url, "HookMetrics", {"name": name} if name else {})["hooks"]
    if json:
        print_json(hooks)
        return
    for h in hooks:
        counts = f"delivered {h['delivered']}\tfailed {h['failed']}\tdropped {h['dropped']}"
        token = "" if h["owner_token"] == "valid" else f"\towner token: {h['owner_token']}"
        last = f"\tlast error: {h['last_error']}" if h["last_error"] else ""
        out.print(literal(f"{h['name']}\t{counts}{token}{last}"))


@app.command()
@reports_errors
def trigger(name: str, url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Run NAME's action once with a synthetic event."""
    result = _send(url, "HookTrigger", {"name": name})
    print_json(result) if json else typer.echo(f"{name}: {result['result']}")
