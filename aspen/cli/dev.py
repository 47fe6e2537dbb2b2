"""``aspen dev …``: local tooling for trying distributed Aspen on one machine."""

from __future__ import annotations

import signal
import tempfile
import threading
from pathlib import Path
from typing import Annotated

import typer

from aspen.cli.common import console, literal, reports_errors
from aspen.client.credentials import credentials_path
from aspen.cluster.dev_cluster import DEV_BUCKET, DevCluster

app = typer.Typer(help="Local development tooling.", no_args_is_help=True)


@app.command()
@reports_errors
def cluster(
    nodes: Annotated[int, typer.Option(help="How many Aspen nodes.")] = 3,
    etcd_members: Annotated[int, typer.Option(help="How many etcd members (1, 3 or 5).")] = 3,
    object_store: Annotated[
        bool, typer.Option(help="Keep blobs in a local SeaweedFS (else the nodes replicate them between themselves).")
    ] = True,
    base_dir: Annotated[
        str | None, typer.Option(help="Where data dirs and logs go. Default: a new temporary directory.")
    ] = None,
) -> None:
    """Start an etcd cluster and Aspen nodes on loopback; Ctrl-C or SIGTERM stops them all."""
    root = Path(base_dir) if base_dir else Path(tempfile.mkdtemp(prefix="aspen-dev-"))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    dev = DevCluster(root, nodes=nodes, etcd_members=etcd_members, object_store=object_store)
    store = " a SeaweedFS," if object_store else ""
    console.print(literal(f"starting {etcd_members} etcd members,{store} and {nodes} Aspen nodes in {root} …"))
    dev.start()
    try:
        assert dev.etcd is not None
        console.print(literal("etcd endpoints: " + ",".join(dev.etcd.endpoints)))
        if dev.seaweed is not None:
            console.print(literal(f"blobs: SeaweedFS S3 at {dev.seaweed.endpoint}, bucket {DEV_BUCKET}"))
        for n in dev.members:
            console.print(literal(f"{n.name}: {n.url}   (log: {n.log_path})"))
        console.print(f"\nexport ASPEN_URL={','.join(dev.urls)}")
        console.print(f"credentials for these URLs: {credentials_path()}", highlight=False)
        console.print("then: aspen cluster status   — Ctrl-C stops everything", highlight=False)
        reported: set[str] = set()
        while not stop.wait(0.5):
            for n in dev.members:
                if not n.running() and n.name not in reported:
                    reported.add(n.name)
                    console.print(
                        literal(f"{n.name} exited ({n.process.returncode}); see {n.log_path}"), style="yellow"
                    )
    finally:
        console.print("stopping …")
        dev.stop()
        console.print("stopped")
