"""``aspen status``: is the node up, and what is it."""

from __future__ import annotations

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


@reports_errors
def status(url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Health and identity of the node."""
    with connect(url) as client:
        health = client.get_health()
        info = client.get_node_info()
    if json:
        print_json({"health": health, "node": info})
        return
    table = Table(show_header=False, box=None)
    table.add_row("status", literal(health.status))
    table.add_row("node id", literal(health.node_id))
    table.add_row("endpoint", literal(info.endpoint_addr))
    table.add_row("version", literal(info.version))
    table.add_row("uptime", f"{health.uptime_seconds:.1f} s")
    table.add_row("revision", str(health.revision))
    table.add_row("request types", str(len(info.request_types)))
    console.print(table)
