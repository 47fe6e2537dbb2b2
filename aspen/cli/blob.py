"""``aspen blob …``: content-addressed blobs, streamed with progress bars."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from aspen.cli.common import (
    JsonOpt,
    UrlOpt,
    connect,
    console,
    err_console,
    fail,
    literal,
    print_json,
    reports_errors,
)
from aspen.errors import ErrorCode

app = typer.Typer(help="Store and fetch blobs by BLAKE3 hash.", no_args_is_help=True)


def _progress() -> Progress:
    return Progress(
        "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        console=err_console, transient=True,
    )  # fmt: skip


@app.command()
@reports_errors
def add(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    tag: Annotated[str | None, typer.Option(help="Protect the blob from GC under this tag.")] = None,
    url: UrlOpt = None,
    json: JsonOpt = False,
) -> None:
    """Upload FILE; prints its hash."""
    size = file.stat().st_size
    with connect(url) as client, _progress() as bar:
        task = bar.add_task(f"upload {file.name}", total=size)
        result = client.upload_blob(file, tag=tag, progress=lambda n: bar.update(task, completed=n))
    if json:
        print_json(result)
    else:
        console.print(literal(result.hash))


@app.command()
@reports_errors
def get(
    hash: str,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="File to write (default: the hash).")] = None,
    url: UrlOpt = None,
) -> None:
    """Download a blob to a file, checking it against its hash."""
    dest = output or Path(hash)
    with connect(url) as client:
        probe = client.get_blob(hash, length=0)  # existence and size, no data
        if not probe.was_found:
            raise fail(ErrorCode.BLOB_NOT_FOUND, f"blob {hash} not found")
        with _progress() as bar:
            task = bar.add_task(f"download {hash[:12]}", total=probe.size)
            got = client.download_blob(hash, dest, progress=lambda n: bar.update(task, completed=n))
    err_console.print(literal(f"{got} bytes -> {dest}"))


@app.command("ls")
@reports_errors
def ls(
    limit: Annotated[int, typer.Option(help="Blobs per page.")] = 1000,
    url: UrlOpt = None,
    json: JsonOpt = False,
) -> None:
    """List blobs."""
    with connect(url) as client:
        page = client.list_blobs(limit=limit)
    if json:
        print_json(page)
        return
    table = Table("hash", "size", "tags")
    for b in page.blobs:
        table.add_row(literal(b.hash), str(b.size), literal(",".join(b.tags)))
    console.print(table)


@app.command("rm")
@reports_errors
def rm(
    hash: str,
    force: Annotated[bool, typer.Option(help="Delete even when protected.")] = False,
    url: UrlOpt = None,
) -> None:
    """Delete a blob."""
    with connect(url) as client:
        result = client.delete_blob(hash, force=force)
    if not result.was_deleted:
        raise fail(ErrorCode.BLOB_NOT_FOUND, f"blob {hash} not found")
    console.print("deleted")


@app.command()
@reports_errors
def protect(hash: str, tag: str, url: UrlOpt = None) -> None:
    """Pin a blob under TAG so GC keeps it."""
    with connect(url) as client:
        client.protect_blob(hash, tag)
    console.print(literal(f"protected under {tag!r}"))


@app.command()
@reports_errors
def unprotect(tag: str, url: UrlOpt = None) -> None:
    """Remove the pin TAG."""
    with connect(url) as client:
        client.unprotect_blob(tag)
    console.print(literal(f"removed tag {tag!r}"))
