"""The asyncio client.

``call(type, body)`` sends any request and returns the response body (or
raises the node's error as :class:`AspenError` with the same code); the
typed methods wrap it for every core request and return the response
Structs of :mod:`aspen.rpc.catalog`. Several node URLs give fail-over: a
request that never reached a node goes to the next one, and idempotent
reads are retried (3 rounds, 100 ms apart) after any transport failure.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, Self

import blake3
import httpx
import msgspec

from aspen.client.credentials import token_for
from aspen.coordination.requests import COORD_REQUESTS
from aspen.errors import AspenError, ErrorCode
from aspen.rpc import catalog as c
from aspen.rpc.envelope import JSON, MSGPACK, Envelope, decode_response, encode_request
from aspen.storage.records import WatchEvent, WriteOp

DEFAULT_URL = "http://127.0.0.1:7420"
CHUNK = 1 << 20
Progress = Callable[[int], None]  # called with the bytes transferred so far


def resolve_urls(urls: str | Sequence[str] | None) -> list[str]:
    """Explicit URLs, else ``ASPEN_URL`` (comma-separated), else the default."""
    if urls is None:
        urls = os.environ.get("ASPEN_URL") or DEFAULT_URL
    if isinstance(urls, str):
        urls = urls.split(",")
    found = [u.strip().rstrip("/") for u in urls if u.strip()]
    if not found:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, "no node URL given")
    return [u if "://" in u else f"http://{u}" for u in found]


def tls_verify(cacert: str | None) -> ssl.SSLContext | bool:
    """Verify HTTPS nodes against ``cacert`` (else ``ASPEN_CACERT``, else the system CAs)."""
    cacert = cacert or os.environ.get("ASPEN_CACERT") or None
    if cacert is None:
        return True
    try:
        return ssl.create_default_context(cafile=cacert)
    except (ssl.SSLError, OSError) as exc:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"cannot use CA bundle {cacert}: {exc}") from None


def _cert_rejected(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    while exc is not None and not isinstance(exc, ssl.SSLCertVerificationError):
        exc = exc.__cause__ or exc.__context__
    return exc


def _raise_for(resp: httpx.Response) -> None:
    """Turn an error envelope from a streaming route into AspenError."""
    if resp.status_code < 400:
        return
    try:
        wire = decode_response(resp.content, False)
    except AspenError:
        raise AspenError(ErrorCode.UNAVAILABLE, f"node answered HTTP {resp.status_code}: {resp.text[:200]}") from None
    raise AspenError.from_body(wire.body)


class Client:
    def __init__(
        self,
        urls: str | Sequence[str] | None = None,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        encoding: str = "msgpack",
        retries: int = 3,
        retry_delay: float = 0.1,
        cacert: str | None = None,
    ) -> None:
        if encoding not in ("msgpack", "json"):
            raise AspenError(ErrorCode.INVALID_ARGUMENT, f"encoding must be msgpack or json, got {encoding!r}")
        self.urls = resolve_urls(urls)
        # None: look it up (aspen.client.credentials); "": send none
        self.token = (token_for(self.urls) if token is None else token) or None
        self.timeout = timeout
        self._msgpack = encoding == "msgpack"
        self._retries = max(1, retries)
        self._retry_delay = retry_delay
        self._current = 0  # index of the URL that answered last
        headers = {"authorization": f"Bearer {self.token}"} if self.token else None
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=5.0), headers=headers, verify=tls_verify(cacert)
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- transport ------------------------------------------------------------

    async def _send(
        self, build: Callable[[str], httpx.Request], idempotent: bool, *, stream: bool = False, rpc: bool = False
    ) -> httpx.Response:
        """Send to the current node, failing over to the others. Requests that
        may have reached a node are only re-sent when ``idempotent``. With
        ``rpc``, an HTTP 5xx counts as such a failure: ``/v1/rpc`` answers
        every Aspen error with an envelope, so a 5xx came from a crash or proxy."""
        last: Exception | None = None
        n = len(self.urls)
        for round_ in range(self._retries):
            for i in range(n):
                index = (self._current + i) % n
                try:
                    resp = await self._http.send(build(self.urls[index]), stream=stream)
                except httpx.ConnectError as exc:  # never reached the node: safe to move on
                    if (bad := _cert_rejected(exc)) is not None:  # no retry can fix this
                        raise AspenError(
                            ErrorCode.TLS_VERIFY_FAILED,
                            f"the TLS certificate of {self.urls[index]} did not verify ({bad.verify_message}); "
                            "give its CA with --cacert or ASPEN_CACERT",
                        ) from None
                    last = exc
                    continue
                except httpx.TransportError as exc:
                    if not idempotent:
                        raise AspenError(
                            ErrorCode.UNAVAILABLE,
                            f"lost the connection to {self.urls[index]} after sending; the outcome is unknown: {exc!r}",
                        ) from None
                    last = exc
                    continue
                if rpc and resp.status_code >= 500:
                    last = AspenError(ErrorCode.UNAVAILABLE, f"{self.urls[index]} answered HTTP {resp.status_code}")
                    if not idempotent:
                        raise AspenError(
                            ErrorCode.UNAVAILABLE,
                            f"{self.urls[index]} answered HTTP {resp.status_code} after the request was sent; "
                            "the outcome is unknown",
                        )
                    continue
                self._current = index
                return resp
            if round_ + 1 < self._retries:
                await asyncio.sleep(self._retry_delay)
        raise AspenError(ErrorCode.UNAVAILABLE, f"no node reachable at {', '.join(self.urls)}: {last!r}")

    async def call(
        self, type: str, body: dict[str, Any] | None = None, *, app: str | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Send one request; returns the response body, raises AspenError for
        an Error response (same code as the node's)."""
        timeout = self.timeout if timeout is None else timeout
        env = Envelope(type=type, body=body or {}, app=app, timeout_ms=int(timeout * 1000))  # token: in the header
        content = encode_request(env, self._msgpack)
        media = MSGPACK if self._msgpack else JSON
        headers = {"content-type": media, "accept": media}

        def build(url: str) -> httpx.Request:
            return self._http.build_request(
                "POST",
                f"{url}/v1/rpc",
                content=content,
                headers=headers,
                timeout=httpx.Timeout(timeout + 5, connect=5.0),
            )

        resp = await self._send(build, type in c.IDEMPOTENT_REQUESTS, rpc=True)
        wire = decode_response(resp.content, "msgpack" in resp.headers.get("content-type", ""))
        if wire.type == "Error":
            raise AspenError.from_body(wire.body)
        return wire.body

    async def _typed(self, request: c.Body) -> Any:
        type_ = type(request).__name__
        body = await self.call(type_, c.to_body(request))
        return msgspec.convert(body, c.CORE_REQUESTS[type_][2])

    async def coord(self, request: c.Body) -> Any:
        """Send one coordination request (a Struct of
        :mod:`aspen.coordination.requests`); returns its typed response. A
        blocking request gets its own wait plus a margin as the call timeout."""
        type_ = type(request).__name__
        wait = getattr(request, "timeout_seconds", None)
        timeout = None if wait is None else max(self.timeout, wait + 5)
        body = await self.call(type_, c.to_body(request), timeout=timeout)
        return msgspec.convert(body, COORD_REQUESTS[type_][2])

    # --- node ------------------------------------------------------------------

    async def ping(self) -> c.Pong:
        return await self._typed(c.Ping())

    async def get_health(self) -> c.HealthResult:
        return await self._typed(c.GetHealth())

    async def get_node_info(self) -> c.NodeInfoResult:
        return await self._typed(c.GetNodeInfo())

    async def plugin_reload(self, name: str | None = None) -> c.PluginReloadResult:
        return await self._typed(c.PluginReload(name=name))

    # --- kv --------------------------------------------------------------------

    async def read_key(self, key: str) -> c.ReadResult:
        return await self._typed(c.ReadKey(key=key))

    async def write_key(self, key: str, value: bytes, *, lease_id: int = 0) -> c.WriteResult:
        return await self._typed(c.WriteKey(key=key, value=value, lease_id=lease_id))

    async def write_key_with_lease(self, key: str, value: bytes, lease_id: int) -> c.WriteResult:
        return await self._typed(c.WriteKeyWithLease(key=key, value=value, lease_id=lease_id))

    async def delete_key(self, key: str) -> c.DeleteResult:
        return await self._typed(c.DeleteKey(key=key))

    async def scan_keys(
        self, prefix: str = "", *, limit: int = 1000, continuation_token: str | None = None
    ) -> c.ScanResult:
        return await self._typed(c.ScanKeys(prefix=prefix, limit=limit, continuation_token=continuation_token))

    async def compare_and_swap_key(self, key: str, expected: bytes | None, new_value: bytes) -> c.CompareAndSwapResult:
        return await self._typed(c.CompareAndSwapKey(key=key, expected=expected, new_value=new_value))

    async def compare_and_delete_key(self, key: str, expected: bytes) -> c.CompareAndSwapResult:
        return await self._typed(c.CompareAndDeleteKey(key=key, expected=expected))

    async def batch_read(self, keys: Sequence[str]) -> c.BatchReadResult:
        return await self._typed(c.BatchRead(keys=list(keys)))

    async def batch_write(self, operations: Sequence[WriteOp]) -> c.BatchWriteResult:
        return await self._typed(c.BatchWrite(operations=list(operations)))

    async def conditional_batch_write(
        self, conditions: Sequence[Any], operations: Sequence[Any], else_operations: Sequence[Any] = ()
    ) -> c.ConditionalBatchWriteResult:
        return await self._typed(
            c.ConditionalBatchWrite(
                conditions=list(conditions), operations=list(operations), else_operations=list(else_operations)
            )
        )

    # --- leases ----------------------------------------------------------------

    async def lease_grant(self, ttl_seconds: int, lease_id: int = 0) -> c.LeaseGrantResult:
        return await self._typed(c.LeaseGrant(ttl_seconds=ttl_seconds, lease_id=lease_id))

    async def lease_revoke(self, lease_id: int) -> c.LeaseRevokeResult:
        return await self._typed(c.LeaseRevoke(lease_id=lease_id))

    async def lease_keepalive(self, lease_id: int) -> c.LeaseKeepaliveResult:
        return await self._typed(c.LeaseKeepalive(lease_id=lease_id))

    async def lease_time_to_live(self, lease_id: int, *, include_keys: bool = False) -> c.LeaseTimeToLiveResult:
        return await self._typed(c.LeaseTimeToLive(lease_id=lease_id, include_keys=include_keys))

    async def lease_list(self) -> c.LeaseListResult:
        return await self._typed(c.LeaseList())

    # --- watches ---------------------------------------------------------------

    async def watch_create(self, prefix: str = "", start_revision: int | None = None) -> c.WatchCreateResult:
        return await self._typed(c.WatchCreate(prefix=prefix, start_revision=start_revision))

    async def watch_cancel(self, watch_id: int) -> c.WatchCancelResult:
        return await self._typed(c.WatchCancel(watch_id=watch_id))

    async def watch(self, prefix: str = "", start_revision: int | None = None) -> AsyncIterator[WatchEvent]:
        """Events under ``prefix`` from ``start_revision`` (None: from now), over
        SSE. A dropped connection is resumed after the last event seen, on
        this node or another, so no event is lost or repeated."""
        last: int | None = None if start_revision is None else start_revision - 1
        if last is None:
            last = (await self.get_health()).revision
        decoder = msgspec.json.Decoder(c.WatchEventMessage)
        while True:
            headers = {"accept": "text/event-stream", "last-event-id": str(last)}

            def build(url: str, headers: dict[str, str] = headers) -> httpx.Request:
                return self._http.build_request(
                    "GET", f"{url}/v1/watch", params={"prefix": prefix}, headers=headers,
                    timeout=httpx.Timeout(None, connect=5.0),
                )  # fmt: skip

            resp = await self._send(build, idempotent=True, stream=True)
            try:
                if resp.status_code >= 400:
                    await resp.aread()
                    _raise_for(resp)
                event_type = None
                async for line in resp.aiter_lines():
                    if line.startswith("event:"):
                        event_type = line[6:].strip()
                    elif line.startswith("data:"):
                        data = line[5:].strip().encode()
                        if event_type == "error":
                            raise AspenError.from_body(msgspec.json.decode(data))
                        event = decoder.decode(data).event
                        last = event.revision
                        yield event
                return  # the node ended the stream (it is shutting down)
            except httpx.TransportError:
                await asyncio.sleep(self._retry_delay)  # resume after ``last``
            finally:
                await resp.aclose()

    # --- blobs -----------------------------------------------------------------

    async def add_blob(self, data: bytes, *, tag: str | None = None) -> c.AddBlobResult:
        return await self._typed(c.AddBlob(data=data, tag=tag))

    async def get_blob(self, hash: str, *, offset: int = 0, length: int | None = None) -> c.GetBlobResult:
        return await self._typed(c.GetBlob(hash=hash, offset=offset, length=length))

    async def has_blob(self, hash: str) -> c.HasBlobResult:
        return await self._typed(c.HasBlob(hash=hash))

    async def list_blobs(self, *, limit: int = 1000, continuation_token: str | None = None) -> c.ListBlobsResult:
        return await self._typed(c.ListBlobs(limit=limit, continuation_token=continuation_token))

    async def delete_blob(self, hash: str, *, force: bool = False) -> c.DeleteBlobResult:
        return await self._typed(c.DeleteBlob(hash=hash, is_force=force))

    async def protect_blob(self, hash: str, tag: str) -> c.ProtectBlobResult:
        return await self._typed(c.ProtectBlob(hash=hash, tag=tag))

    async def unprotect_blob(self, tag: str) -> c.UnprotectBlobResult:
        return await self._typed(c.UnprotectBlob(tag=tag))

    async def upload_blob(
        self, path: str | Path, *, tag: str | None = None, progress: Progress | None = None
    ) -> c.AddBlobResult:
        """Stream a file of any size to ``PUT /v1/blobs``."""
        path = Path(path)

        async def chunks() -> AsyncIterator[bytes]:
            sent = 0
            f = await asyncio.to_thread(path.open, "rb")
            with f:
                while chunk := await asyncio.to_thread(f.read, CHUNK):
                    sent += len(chunk)
                    yield chunk
                    if progress is not None:
                        progress(sent)

        def build(url: str) -> httpx.Request:
            return self._http.build_request(
                "PUT", f"{url}/v1/blobs", content=chunks(), headers={"content-type": "application/octet-stream"}
            )

        resp = await self._send(build, idempotent=False)
        _raise_for(resp)
        result = msgspec.json.decode(resp.content, type=c.AddBlobResult)
        if tag is not None:
            await self.protect_blob(result.hash, tag)
        return result

    async def download_blob(
        self,
        hash: str,
        dest: str | Path,
        *,
        offset: int = 0,
        length: int | None = None,
        progress: Progress | None = None,
    ) -> int:
        """Stream a blob (or a byte range) from ``GET /v1/blobs/{hash}`` into
        ``dest``; a whole blob is checked against its hash. Returns the size."""
        if offset < 0 or (length is not None and length < 0):
            raise AspenError(ErrorCode.INVALID_RANGE, "offset and length must not be negative")
        if length == 0:  # an empty range has no HTTP form: validate over RPC
            if not (await self.get_blob(hash, offset=offset, length=0)).was_found:
                raise AspenError(ErrorCode.BLOB_NOT_FOUND, f"blob {hash} not found", hash=hash)
            Path(dest).write_bytes(b"")
            return 0
        headers = {}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            headers["range"] = f"bytes={offset}-{end}"

        def build(url: str) -> httpx.Request:
            return self._http.build_request("GET", f"{url}/v1/blobs/{hash}", headers=headers)

        resp = await self._send(build, idempotent=True, stream=True)
        try:
            if resp.status_code >= 400:
                await resp.aread()
                _raise_for(resp)
            hasher = None if headers else blake3.blake3()
            got = 0
            tmp = Path(dest).with_name(Path(dest).name + ".part")
            with tmp.open("wb") as f:
                async for chunk in resp.aiter_bytes(CHUNK):
                    await asyncio.to_thread(f.write, chunk)
                    if hasher is not None:
                        hasher.update(chunk)
                    got += len(chunk)
                    if progress is not None:
                        progress(got)
        finally:
            await resp.aclose()
        if hasher is not None and hasher.hexdigest() != hash:
            tmp.unlink(missing_ok=True)
            raise AspenError(ErrorCode.BLOB_CORRUPT, f"downloaded data does not match blob {hash}", hash=hash)
        tmp.replace(dest)
        return got
