"""``aspen node …``: run a node."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from aspen.cli.common import reports_errors
from aspen.node.config import load_config

app = typer.Typer(help="Run an Aspen node.", no_args_is_help=True)


@app.command()
@reports_errors
def start(
    data_dir: Annotated[
        str | None, typer.Option(help="Where the KV file and blobs live. Default ./aspen-data.")
    ] = None,
    listen: Annotated[str | None, typer.Option(help="HOST:PORT to serve on. Default 127.0.0.1:7420.")] = None,
    config: Annotated[str | None, typer.Option(help="aspen.toml; flags override it.")] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning, error.")] = None,
    etcd: Annotated[
        str | None, typer.Option(help="etcd endpoints HOST:PORT[,HOST:PORT…]: keep KV in etcd instead of SQLite.")
    ] = None,
    blob_store: Annotated[
        str | None,
        typer.Option(help="s3://BUCKET?endpoint=URL[&region=…]: keep blobs in an S3 bucket ([blobs] in aspen.toml)."),
    ] = None,
    allow_unsigned_plugins: Annotated[
        bool, typer.Option(help="Load plugins without a trusted signature (local development only).")
    ] = False,
    http_server: Annotated[
        str | None, typer.Option(help="uvicorn or granian. Default auto: $ASPEN_HTTP_SERVER, else uvicorn.")
    ] = None,
) -> None:
    """Start a node on the embedded default (SQLite + blob directory); SIGTERM drains and stops it."""
    from aspen.node.event_loop import run
    from aspen.node.server import serve  # the server stack loads only for this command

    cfg = load_config(
        config, data_dir=data_dir, listen=listen, log_level=log_level, etcd=etcd.split(",") if etcd else None,
        http_server=http_server,
    )  # fmt: skip
    if blob_store is not None:
        cfg.sections.setdefault("blobs", {}).update(backend="s3", url=blob_store)
    if allow_unsigned_plugins:
        cfg.sections.setdefault("plugins", {})["allow_unsigned"] = True
    logging.basicConfig(level=cfg.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(serve(cfg))
