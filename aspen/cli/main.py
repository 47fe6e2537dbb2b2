"""The root ``aspen`` command: one Typer sub-app per command group, each in
its own module."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from aspen.cli import blob, cluster, dev, job, kv, node, plugin, status

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
def _root(cacert: CacertOpt = None) -> None:
    """Options for every command, given before it (``aspen --cacert ca.pem kv get k``).
    ``--cacert`` is the flag form of ASPEN_CACERT, which the client reads."""
    if cacert:
        os.environ["ASPEN_CACERT"] = cacert


app.add_typer(node.app, name="node")
app.add_typer(kv.app, name="kv")
app.add_typer(blob.app, name="blob")
app.add_typer(job.app, name="job")
app.add_typer(plugin.app, name="plugin")
app.add_typer(cluster.app, name="cluster")
app.add_typer(dev.app, name="dev")
app.command("status")(status.status)
