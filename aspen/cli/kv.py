"""``aspen kv …``: read and write the key-value store."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from aspen.cli.common import (
    JsonOpt,
    UrlOpt,
    connect,
    console,
    fail,
    literal,
    print_json,
    reports_errors,
    show_bytes,
)
from aspen.errors import ErrorCode
from aspen.storage.records import WatchEvent

app = typer.Typer(help="Read and write keys.", no_args_is_help=True)


def _value(value: str | None, file: Path | None) -> bytes:
    if file is not None:
        return file.read_bytes()
    if value is None:
        raise fail(ErrorCode.INVALID_ARGUMENT, "give a VALUE, --file, or - to read stdin")
    return sys.stdin.buffer.read() if value == "-" else value.encode()


@app.command()
@reports_errors
def get(key: str, url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Print the value of KEY (exit 1 when it does not exist)."""
    with connect(url) as client:
        result = client.read_key(key)
    if not result.was_found:
        raise fail(ErrorCode.KEY_NOT_FOUND, f"key {key!r} not found")
    if json:
        print_json(result.kv)
    else:
        sys.stdout.buffer.write(result.value)
        if sys.stdout.isatty():
            sys.stdout.write("\n")


@app.command()
@reports_errors
def put(
    key: str,
    value: Annotated[str | None, typer.Argument(help="The value; - reads stdin.")] = None,
    file: Annotated[Path | None, typer.Option(help="Read the value from this file.")] = None,
    lease: Annotated[int, typer.Option(help="Attach to this lease id.")] = 0,
    url: UrlOpt = None,
    json: JsonOpt = False,
) -> None:
    """Set KEY to VALUE."""
    with connect(url) as client:
        result = client.write_key(key, _value(value, file), lease_id=lease)
    print_json(result) if json else console.print(literal(f"OK revision {result.revision}"))


@app.command()
@reports_errors
def delete(key: str, url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Delete KEY."""
    with connect(url) as client:
        result = client.delete_key(key)
    if json:
        print_json(result)
    else:
        console.print("deleted" if result.was_deleted else "not found (nothing deleted)")


@app.command()
@reports_errors
def scan(
    prefix: Annotated[str, typer.Argument(help="Key prefix; empty for all keys.")] = "",
    limit: Annotated[int, typer.Option(help="Keys per page.")] = 1000,
    all_pages: Annotated[bool, typer.Option("--all", help="Follow continuation tokens to the end.")] = False,
    url: UrlOpt = None,
    json: JsonOpt = False,
) -> None:
    """List keys under PREFIX in key order."""
    entries, token, truncated = [], None, False
    with connect(url) as client:
        while True:
            page = client.scan_keys(prefix, limit=limit, continuation_token=token)
            entries.extend(page.entries)
            token, truncated = page.continuation_token, page.is_truncated
            if not (all_pages and truncated):
                break
    if json:
        print_json({"entries": entries, "is_truncated": truncated, "continuation_token": token})
        return
    table = Table("key", "value", "version", "mod rev")
    for kv in entries:
        table.add_row(literal(kv.key), literal(show_bytes(kv.value)[:60]), str(kv.version), str(kv.mod_revision))
    console.print(table)
    if truncated:
        console.print(literal(f"more keys: --all, or continue after {entries[-1].key!r}"), style="dim")


@app.command()
@reports_errors
def cas(
    key: str,
    new_value: str,
    expected: Annotated[str | None, typer.Option(help="Current value required for the swap.")] = None,
    create: Annotated[bool, typer.Option("--create", help="Only if KEY does not exist yet.")] = False,
    url: UrlOpt = None,
    json: JsonOpt = False,
) -> None:
    """Compare-and-swap: set KEY to NEW_VALUE if it currently holds --expected (exit 1 if not)."""
    if create == (expected is not None):
        raise fail(ErrorCode.INVALID_ARGUMENT, "give exactly one of --expected VALUE or --create")
    with connect(url) as client:
        result = client.compare_and_swap_key(key, None if create else expected.encode(), new_value.encode())
    if json:
        print_json(result)
    elif result.is_success:
        console.print(literal(f"OK revision {result.revision}"))
    if not result.is_success:
        current = "does not exist" if result.actual is None else f"is {show_bytes(result.actual.value)!r}"
        raise fail("COMPARE_FAILED", f"not swapped: {key!r} {current}")


@app.command()
@reports_errors
def watch(
    prefix: Annotated[str, typer.Argument(help="Key prefix; empty for all keys.")] = "",
    from_revision: Annotated[int | None, typer.Option(help="Replay from this revision.")] = None,
    count: Annotated[int | None, typer.Option(help="Stop after this many events.")] = None,
    url: UrlOpt = None,
    json: JsonOpt = False,
) -> None:
    """Print changes under PREFIX as they happen (Ctrl-C stops)."""

    def show(event: WatchEvent) -> None:
        if json:
            print_json(event)
        else:
            value = "" if event.type == "delete" else " = " + show_bytes(event.kv.value)
            console.print(literal(f"{event.revision} {event.type} {event.kv.key}{value}"))

    follow(url, prefix, show, from_revision=from_revision, count=count)


def follow(
    url: str | None, prefix: str, show: Callable[[WatchEvent], None], *,
    from_revision: int | None = None, count: int | None = None,
) -> None:  # fmt: skip
    """Show each change under ``prefix`` as it happens, until ``count`` or Ctrl-C."""
    seen = 0
    with connect(url) as client:
        try:
            for event in client.watch(prefix, from_revision):
                show(event)
                sys.stdout.flush()
                seen += 1
                if count is not None and seen >= count:
                    break
        except KeyboardInterrupt:
            pass
