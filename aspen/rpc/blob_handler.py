"""Core handler for blob requests carried inside RPC messages. Blobs larger
than a message travel through ``PUT /v1/blobs`` and ``GET /v1/blobs/{hash}``.

Tags under ``plugin:`` pin installed plugins' modules: only the plugin
layer sets or removes them (by removing the plugin), so a client cannot
unpin, force-delete or squat on them."""

from __future__ import annotations

from typing import Any

from aspen.errors import AspenError, ErrorCode
from aspen.rpc import catalog as c
from aspen.rpc.handler import RequestContext
from aspen.rpc.typed_handler import TypedHandler

PLUGIN_TAG_PREFIX = "plugin:"  # aspen.plugins.store.blob_tag


def refuse_plugin_tag(tag: Any, ctx: RequestContext) -> None:
    if ctx.caller is not None and isinstance(tag, str) and tag.startswith(PLUGIN_TAG_PREFIX):
        raise AspenError(
            ErrorCode.BLOB_PROTECTED,
            f"tag {tag!r} pins a plugin module; it goes only when the plugin is removed",
            tag=tag,
        )


class BlobHandler(TypedHandler):
    name = "core.blob"
    priority = 50
    handles = ("AddBlob", "GetBlob", "HasBlob", "ListBlobs", "DeleteBlob", "ProtectBlob", "UnprotectBlob")

    async def add_blob(self, body: c.AddBlob, ctx: RequestContext) -> c.AddBlobResult:
        refuse_plugin_tag(body.tag, ctx)
        r = await self.node.blobs.add_bytes(body.data)
        if body.tag is not None:
            await self.node.blobs.protect(r.hash, body.tag)
        return c.AddBlobResult(hash=r.hash, size=r.size, was_new=r.was_new)

    async def get_blob(self, body: c.GetBlob, ctx: RequestContext) -> c.GetBlobResult:
        blobs = self.node.blobs
        if not await blobs.has(body.hash):
            return c.GetBlobResult(was_found=False)
        size = await blobs.size(body.hash)
        want = body.length if body.length is not None else max(0, size - body.offset)
        if want > c.MAX_RPC_BLOB_BYTES:
            raise AspenError(
                ErrorCode.BLOB_TOO_LARGE,
                f"{want} bytes do not fit in one RPC message (limit {c.MAX_RPC_BLOB_BYTES}); "
                f"use GET /v1/blobs/{body.hash} or ask for a range with offset/length",
                size=size,
                max=c.MAX_RPC_BLOB_BYTES,
            )
        data = await blobs.get_bytes(body.hash, offset=body.offset, length=body.length)
        return c.GetBlobResult(was_found=True, data=data, size=size)

    async def has_blob(self, body: c.HasBlob, ctx: RequestContext) -> c.HasBlobResult:
        return c.HasBlobResult(does_exist=await self.node.blobs.has(body.hash))

    async def list_blobs(self, body: c.ListBlobs, ctx: RequestContext) -> c.ListBlobsResult:
        page = await self.node.blobs.list(limit=body.limit, continuation=body.continuation_token)
        return c.ListBlobsResult(
            blobs=page.blobs, is_truncated=page.is_truncated, continuation_token=page.continuation_token
        )

    async def delete_blob(self, body: c.DeleteBlob, ctx: RequestContext) -> c.DeleteBlobResult:
        blobs = self.node.blobs
        try:
            return c.DeleteBlobResult(was_deleted=await blobs.delete(body.hash, force=False))
        except AspenError as exc:
            if exc.code != ErrorCode.BLOB_PROTECTED or not body.is_force:
                raise
            for tag in exc.details.get("tags", []):
                refuse_plugin_tag(tag, ctx)
        return c.DeleteBlobResult(was_deleted=await blobs.delete(body.hash, force=True))

    async def protect_blob(self, body: c.ProtectBlob, ctx: RequestContext) -> c.ProtectBlobResult:
        refuse_plugin_tag(body.tag, ctx)
        await self.node.blobs.protect(body.hash, body.tag)
        return c.ProtectBlobResult(is_success=True)

    async def unprotect_blob(self, body: c.UnprotectBlob, ctx: RequestContext) -> c.UnprotectBlobResult:
        refuse_plugin_tag(body.tag, ctx)
        await self.node.blobs.unprotect(body.tag)
        return c.UnprotectBlobResult(is_success=True)


def create(node: Any) -> BlobHandler:
    return BlobHandler(node)
