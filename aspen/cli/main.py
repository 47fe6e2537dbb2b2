"""The root ``aspen`` command: one Typer sub-app per command group, each in
its own module."""

from __future__ import annotations

import functools
import importlib
import os
from typing import Annotated

import typer
from typer.core import TyperCommand, TyperGroup

# command name -> (module, attribute): a sub-app, or a function for a single command
COMMANDS: dict[str, tuple[str, str]] = {
    "node": ("aspen.cli.node", "app"),
    "kv": ("aspen.cli.kv", "app"),
    "blob": ("aspen.cli.blob", "app"),
    "job": ("aspen.cli.job", "app"),
    "plugin": ("aspen.cli.plugin", "app"),
    "cluster": ("aspen.cli.cluster", "app"),
    "dev": ("aspen.cli.dev", "app"),
    "token": ("aspen.cli.token", "app"),
    "app": ("aspen.cli.app", "app"),
    "federation": ("aspen.cli.federation", "app"),
    "lock": ("aspen.cli.coord", "lock"),
    "rwlock": ("aspen.cli.coord", "rwlock"),
    "semaphore": ("aspen.cli.coord", "semaphore"),
    "election": ("aspen.cli.coord", "election"),
    "barrier": ("aspen.cli.coord", "barrier"),
    "counter": ("aspen.cli.coord", "counter"),
    "sequence": ("aspen.cli.coord", "sequence"),
    "ratelimit": ("aspen.cli.coord", "ratelimit"),
    "queue": ("aspen.cli.queue", "app"),
    "service": ("aspen.cli.service", "app"),
    "hook": ("aspen.cli.hook", "app"),
    "status": ("aspen.cli.status", "status"),
}


@functools.cache
def _command(name: str) -> TyperGroup | TyperCommand:
    """Import and build one command group only: building all of them (over a hundred
    commands' parameters, and every group's imports) doubled the start-up of each
    ``aspen`` invocation."""
    module, attr = COMMANDS[name]
    target = getattr(importlib.import_module(module), attr)
    holder = typer.Typer(add_completion=False)
    holder.callback()(lambda: None)  # a group even when it holds one command
    if isinstance(target, typer.Typer):
        holder.add_typer(target, name=name)
    else:
        holder.command(name)(target)
    return typer.main.get_command(holder).commands[name]  # type: ignore[attr-defined]


class LazyGroup(TyperGroup):
    """The root group: lists every command, builds only the one that runs."""

    def list_commands(self, ctx: typer.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: typer.Context, cmd_name: str) -> TyperGroup | TyperCommand | None:
        return _command(cmd_name) if cmd_name in COMMANDS else None


app = typer.Typer(
    name="aspen",
    help="Aspen: a plugin-extensible platform for distributed applications.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=LazyGroup,
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
