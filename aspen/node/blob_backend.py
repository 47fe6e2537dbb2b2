"""Which blob store a node serves: the local directory, or an S3 bucket (``[blobs] backend
= "s3"`` or ``aspen node start --blob-store s3://…``) whose records live in the node's KV
store — on etcd, every node of the cluster then sees the same blobs, tags and GC state.
The ``[blobs]`` quotas apply to either: on S3 ``max_total_bytes`` caps the whole cluster's
blobs (one counter in KV), not one node's."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aspen.node.blob_gc import blobs_config
from aspen.node.config import NodeConfig
from aspen.storage.protocol import KeyValueStore
from aspen.storage.s3_settings import blob_backend

if TYPE_CHECKING:
    from aspen.storage.s3_blobs import S3BlobStore


async def open_s3_blobs(config: NodeConfig, kv: KeyValueStore, node_id: str) -> S3BlobStore | None:
    """The S3 store when configured (``STORAGE_UNAVAILABLE`` when it cannot be reached), else None."""
    settings = blob_backend(config.sections.get("blobs", {}))
    if settings is None:
        return None
    # aiobotocore loads only for this backend
    from aspen.storage.s3_blobs import S3BlobStore

    limits = blobs_config(config)
    return await S3BlobStore.open(
        settings, kv, max_blob_size=limits.max_blob_bytes, max_total_bytes=limits.max_total_bytes, owner=node_id
    )
