"""The root ``aspen`` command: mounts each command group.

Groups owned by other layers (job, plugin, cluster, dev) are mounted when
their module exists; an import error inside one is a bug and is not hidden.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import typer

from aspen.cli import blob, kv, node, status

app = typer.Typer(
    name="aspen",
    help="Aspen: a plugin-extensible platform for distributed applications.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(node.app, name="node")
app.add_typer(kv.app, name="kv")
app.add_typer(blob.app, name="blob")
app.command("status")(status.status)

_HERE = Path(__file__).parent
for _group in ("job", "plugin", "app", "cluster", "federation", "token", "dev"):
    if (_HERE / f"{_group}.py").exists():
        app.add_typer(importlib.import_module(f"aspen.cli.{_group}").app, name=_group)
