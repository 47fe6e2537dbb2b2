"""The root ``aspen`` command: one Typer sub-app per command group, each in
its own module."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from aspen.cli import app as app_cli
from aspen.cli import (
    blob,
    cluster,
    coord,
    dev,
    federation,
    hook,
    job,
    kv,
    node,
    plugin,
    queue,
    service,
    status,
    token,
)

app = typer.Typer(
    name="aspen",
    help="Aspen: a plugin-extensible platform for distributed applications.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


CacertOpt = Annotated[
    str | None,
    typer.Option("--cacert", envvar="ASPEN_CACERT", help="CA bundle (PEM) that signed the nodes' HTTPS certificates."),
]


@app.callback()
def main(
    url: Annotated[str | None, typer.Option("--url", help="Node URL(s) for every command (as ASPEN_URL).")] = None,
    token_: Annotated[str | None, typer.Option("--token", help="Token to send (as ASPEN_TOKEN).")] = None,
    token_file: Annotated[str | None, typer.Option("--token-file", help="File holding the token.")] = None,
    cacert: CacertOpt = None,
) -> None:
    """Options before the command group apply to the whole command, as with
    etcdctl and kubectl: ``aspen --url … --token … --cacert ca.pem kv get a``."""
    given = (("ASPEN_URL", url), ("ASPEN_TOKEN", token_), ("ASPEN_TOKEN_FILE", token_file), ("ASPEN_CACERT", cacert))
    for name, value in given:
        if value:
            os.environ[name] = value


app.add_typer(node.app, name="node")
app.add_typer(kv.app, name="kv")
app.add_typer(blob.app, name="blob")
app.add_typer(job.app, name="job")
app.add_typer(plugin.app, name="plugin")
app.add_typer(cluster.app, name="cluster")
app.add_typer(dev.app, name="dev")
app.add_typer(token.app, name="token")
app.add_typer(app_cli.app, name="app")
app.add_typer(federation.app, name="federation")
app.add_typer(coord.lock, name="lock")
app.add_typer(coord.rwlock, name="rwlock")
app.add_typer(coord.semaphore, name="semaphore")
app.add_typer(coord.election, name="election")
app.add_typer(coord.barrier, name="barrier")
app.add_typer(coord.counter, name="counter")
app.add_typer(coord.sequence, name="sequence")
app.add_typer(coord.ratelimit, name="ratelimit")
app.add_typer(queue.app, name="queue")
app.add_typer(service.app, name="service")
app.add_typer(hook.app, name="hook")
app.command("status")(status.status)
