"""The few S3 calls the blob backend makes, on aiobotocore, with Aspen's error codes.

Why aiobotocore (see README "Blobs on an S3 store"): it covers every call needed here in
one library — bucket creation for development stores, multipart uploads *and* listing /
aborting abandoned ones, ranged GETs, paginated listing — and signs requests itself.

Failures map to ``STORAGE_UNAVAILABLE`` (unreachable, timed out, refused credentials,
5xx). Idempotent reads are retried here (:meth:`S3Objects.read_retrying`); botocore's own
retries are off, so a write whose outcome is unknown is never re-sent behind our back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from aspen.errors import AspenError, ErrorCode
from aspen.storage.s3_settings import S3Settings

log = logging.getLogger(__name__)

PART_SIZE = 5 << 20  # S3's smallest part size; blobs below it are one PutObject
READ_ATTEMPTS = 3
T = TypeVar("T")


class ObjectMissing(Exception):
    """The key (or upload) does not exist, or is shorter than the range asked for:
    404 / NoSuchKey / NoSuchUpload / InvalidRange."""


def unavailable(exc: BaseException, what: str) -> AspenError:
    return AspenError(ErrorCode.STORAGE_UNAVAILABLE, f"object store: {what} failed: {exc or type(exc).__name__}")


def _is_missing(exc: ClientError) -> bool:
    code = exc.response.get("Error", {}).get("Code", "")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code == "NoSuchBucket":  # the store lost the bucket: an outage, not a damaged object
        return False
    return code in ("NoSuchKey", "NoSuchUpload", "404", "NotFound", "InvalidRange") or status == 404


async def _call(what: str, make: Callable[[], Awaitable[T]], timeout: float) -> T:
    """One request (or one body chunk) within ``timeout``: aiohttp's own read timeout does
    not cover waiting for an answer to a sent body (``Expect: 100-continue``)."""
    try:
        async with asyncio.timeout(timeout):
            return await make()
    except ClientError as exc:
        if _is_missing(exc):
            raise ObjectMissing(what) from exc
        raise unavailable(exc, what) from exc
    except (BotoCoreError, OSError, TimeoutError) as exc:
        raise unavailable(exc, what) from exc
    except Exception as exc:  # aiohttp's ClientError family and friends: the transport broke
        if type(exc).__module__.startswith(("aiohttp", "aiobotocore")):
            raise unavailable(exc, what) from exc
        raise


class S3Objects:
    """An open client on one bucket; keys are relative to ``settings.prefix``."""

    def __init__(self, settings: S3Settings, client: Any, ctx: Any) -> None:
        self.settings = settings
        self._client = client
        self._ctx = ctx
        self.bucket = settings.bucket
        self._timeout = settings.read_timeout

    @classmethod
    async def open(cls, settings: S3Settings) -> S3Objects:
        config = Config(
            s3={"addressing_style": "path" if settings.path_style else "virtual"},
            retries={"max_attempts": 1, "mode": "standard"},
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            max_pool_connections=32,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        ctx = get_session().create_client(
            "s3",
            endpoint_url=settings.endpoint,
            region_name=settings.region,
            aws_access_key_id=settings.access_key_id,
            aws_secret_access_key=settings.secret_access_key,
            config=config,
        )
        client = await ctx.__aenter__()
        return cls(settings, client, ctx)

    def key(self, name: str) -> str:
        return self.settings.prefix + name

    async def close(self) -> None:
        await self._ctx.__aexit__(None, None, None)

    async def _c(self, what: str, make: Callable[[], Awaitable[T]]) -> T:
        return await _call(what, make, self._timeout)

    async def read_retrying(self, what: str, make: Callable[[], Awaitable[T]]) -> T:
        """An idempotent read, retried on STORAGE_UNAVAILABLE with a short backoff."""
        for attempt in range(READ_ATTEMPTS):
            try:
                return await _call(what, make, self._timeout)
            except AspenError as exc:
                if exc.code != ErrorCode.STORAGE_UNAVAILABLE or attempt == READ_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.1 * 2**attempt)
        raise AssertionError("unreachable")

    async def ensure_bucket(self) -> None:
        """Create the bucket when missing (development stores); an existing one is fine."""
        try:
            await self.read_retrying("HeadBucket", lambda: self._client.head_bucket(Bucket=self.bucket))
        except ObjectMissing:
            try:
                await self._c("CreateBucket", lambda: self._client.create_bucket(Bucket=self.bucket))
            except AspenError as exc:
                if "BucketAlreadyOwnedByYou" not in str(exc) and "BucketAlreadyExists" not in str(exc):
                    raise

    # --- writes (never retried) ---------------------------------------------

    async def put(self, name: str, data: bytes) -> None:
        await self._c("PutObject", lambda: self._client.put_object(Bucket=self.bucket, Key=self.key(name), Body=data))

    async def start_multipart(self, name: str) -> str:
        resp = await self._c(
            "CreateMultipartUpload",
            lambda: self._client.create_multipart_upload(Bucket=self.bucket, Key=self.key(name)),
        )
        return resp["UploadId"]

    async def put_part(self, name: str, upload_id: str, number: int, data: bytes) -> dict[str, Any]:
        resp = await self._c(
            "UploadPart",
            lambda: self._client.upload_part(
                Bucket=self.bucket, Key=self.key(name), UploadId=upload_id, PartNumber=number, Body=data
            ),
        )
        return {"ETag": resp["ETag"], "PartNumber": number}

    async def complete_multipart(self, name: str, upload_id: str, parts: list[dict[str, Any]]) -> None:
        await self._c(
            "CompleteMultipartUpload",
            lambda: self._client.complete_multipart_upload(
                Bucket=self.bucket, Key=self.key(name), UploadId=upload_id, MultipartUpload={"Parts": parts}
            ),
        )

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """``key`` is the full key (as listed); a missing upload is already gone."""
        try:
            await self._c(
                "AbortMultipartUpload",
                lambda: self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id),
            )
        except ObjectMissing:
            pass

    async def delete(self, key: str) -> None:
        """``key`` is the full key; deleting a missing key succeeds (S3 semantics)."""
        try:
            await self._c("DeleteObject", lambda: self._client.delete_object(Bucket=self.bucket, Key=key))
        except ObjectMissing:
            pass

    # --- reads ---------------------------------------------------------------

    async def get_range(
        self, name: str, start: int, stop: int, *, block: int = 1 << 20
    ) -> tuple[int, int, AsyncIterator[bytes]]:
        """GET bytes [start, stop) (stop > start): (Content-Length, the object's total size
        from Content-Range, body chunks of at most 1 MiB that never cross a multiple of
        ``block`` from ``start``, so a reader fills blocks without splitting a chunk).
        Raises :class:`ObjectMissing` when the key is gone."""
        resp = await self.read_retrying(
            "GetObject",
            lambda: self._client.get_object(Bucket=self.bucket, Key=self.key(name), Range=f"bytes={start}-{stop - 1}"),
        )
        total = str(resp.get("ContentRange", "")).rpartition("/")[2]
        return (
            int(resp.get("ContentLength", -1)),
            int(total) if total.isdigit() else -1,
            self._body(resp["Body"], block),
        )

    async def _body(self, body: Any, block: int) -> AsyncIterator[bytes]:
        left = block
        try:
            async with body as stream:
                while True:
                    n = min(1 << 20, left)
                    chunk = await self._c("GetObject body", lambda n=n: stream.read(n))
                    if not chunk:
                        return
                    yield chunk
                    left = left - len(chunk) or block
        except (AspenError, GeneratorExit, asyncio.CancelledError):
            raise
        except Exception as exc:  # the connection broke mid-body
            raise unavailable(exc, "GetObject body") from exc

    async def list_objects(self, under: str) -> AsyncIterator[tuple[str, datetime]]:
        """(full key, last modified) of every object under ``prefix + under``."""
        token: str | None = None
        while True:
            args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.key(under)}
            if token:
                args["ContinuationToken"] = token
            page = await self.read_retrying("ListObjectsV2", lambda a=args: self._client.list_objects_v2(**a))
            for obj in page.get("Contents", []):
                yield obj["Key"], obj["LastModified"]
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    async def list_uploads(self, under: str) -> AsyncIterator[tuple[str, str, datetime]]:
        """(full key, upload id, initiated) of unfinished multipart uploads under ``prefix + under``."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.key(under)}
        while True:
            page = await self.read_retrying(
                "ListMultipartUploads", lambda a=args: self._client.list_multipart_uploads(**a)
            )
            for up in page.get("Uploads", []):
                yield up["Key"], up["UploadId"], up.get("Initiated") or datetime.now(UTC)
            if not page.get("IsTruncated"):
                return
            args = {
                **args,
                "KeyMarker": page.get("NextKeyMarker", ""),
                "UploadIdMarker": page.get("NextUploadIdMarker", ""),
            }
