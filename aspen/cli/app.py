"""``aspen app list``: the apps this cluster serves (plugins with an
``app_id`` and native handlers that declare one), and the nodes serving them."""

from __future__ import annotations

import msgspec
import typer
from rich.table import Table

from aspen.cli.common import (
    JsonOpt,
    UrlOpt,
    connect,
    console,
    literal,
    print_json,
    reports_errors,
)

app = typer.Typer(help="Apps this cluster serves (and advertises to peer clusters).", no_args_is_help=True)


@app.command("list")
@reports_errors
def list_(url: UrlOpt = None, json: JsonOpt = False) -> None:
    """App, version, provider (plugin or native) and the nodes serving it."""
    from aspen.federation.requests import AppListResult

    with connect(url) as client:
        result = msgspec.convert(client.call("AppList", {}), AppListResult)
    if json:
        print_json(result)
        return
    table = Table(title=f"Apps ({len(result.apps)})", title_justify="left")
    for col in ("app", "version", "provider", "nodes", "request types"):
        table.add_column(col)
    for a in result.apps:
        table.add_row(
            literal(a.app_id),
            literal(a.version),
            a.provider,
            literal(", ".join(a.nodes)),
            literal(", ".join(a.request_types)),
        )
    console.print(table)
