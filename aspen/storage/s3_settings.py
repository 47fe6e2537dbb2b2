"""Where the S3 blob backend stores objects: one record, from ``[blobs]`` or an ``s3://`` URL.

``[blobs] backend = "s3"`` with ``endpoint``, ``bucket``, ``region``, ``access_key_id`` /
``secret_access_key`` (else the usual AWS environment variables and files, botocore's
chain), ``path_style`` (default true: MinIO, SeaweedFS, Ceph RGW and Garage want it),
``prefix`` (keys live under it, so one bucket can hold several clusters), ``cache_bytes``
(the verified read cache) and ``cleanup_seconds`` (how old an unreferenced object or an
unfinished multipart upload must be before GC removes it; an upload still running is
registered in KV and left alone however long it takes, see :mod:`aspen.storage.s3_running`).

``aspen node start --blob-store s3://bucket?endpoint=http://host:8333&region=…`` fills the
same record (``[blobs] url``); any key of the record may be a query parameter.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import parse_qsl, urlsplit

import msgspec

from aspen.errors import AspenError, ErrorCode

DEFAULT_CACHE_BYTES = 64 << 20
MAX_URL_CHARS = 4096


class S3Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    bucket: Annotated[str, msgspec.Meta(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.\-]*[a-z0-9]$")]
    endpoint: str | None = None  # None: AWS's own endpoint for the region
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    path_style: bool = True
    prefix: Annotated[str, msgspec.Meta(max_length=256)] = "aspen/"
    cache_bytes: Annotated[int, msgspec.Meta(ge=0, le=1 << 40)] = DEFAULT_CACHE_BYTES
    cleanup_seconds: Annotated[float, msgspec.Meta(ge=0, le=30 * 86400)] = 3600.0
    connect_timeout: Annotated[float, msgspec.Meta(gt=0, le=300)] = 3.0
    read_timeout: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 60.0  # per request / body chunk

    def __post_init__(self) -> None:
        if self.endpoint is not None:
            parts = urlsplit(self.endpoint)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise AspenError(
                    ErrorCode.INVALID_ARGUMENT, f"blob store endpoint must be an http(s) URL, got {self.endpoint!r}"
                )
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise AspenError(ErrorCode.INVALID_ARGUMENT, "blob store access_key_id and secret_access_key go together")


def _convert(raw: dict[str, Any], where: str) -> S3Settings:
    try:
        return msgspec.convert(raw, S3Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"invalid blob store {where}: {exc}") from None


def _url_fields(url: object) -> dict[str, Any]:
    if not isinstance(url, str) or len(url) > MAX_URL_CHARS:
        raise AspenError(
            ErrorCode.INVALID_ARGUMENT, f"blob store URL must be a string of at most {MAX_URL_CHARS} characters"
        )
    try:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True, max_num_fields=32)
    except ValueError as exc:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"blob store URL {url!r:.200} is malformed: {exc}") from None
    if parts.scheme != "s3" or not parts.netloc or parts.path not in ("", "/"):
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"blob store must be s3://BUCKET?endpoint=URL, got {url!r:.200}")
    raw: dict[str, Any] = {"bucket": parts.netloc}
    for key, value in query:
        if key in raw:
            raise AspenError(ErrorCode.INVALID_ARGUMENT, f"blob store URL repeats {key!r}")
        raw[key] = value
    return raw


def settings_from_url(url: str) -> S3Settings:
    """``s3://bucket?endpoint=…&region=…`` → settings."""
    return _convert(_url_fields(url), "URL")


def blob_backend(section: dict[str, Any]) -> S3Settings | None:
    """The ``[blobs]`` table → S3 settings, or None for the local directory. ``url`` (what
    ``--blob-store`` sets) fills the settings, over the table's own S3 keys; the table's
    other keys belong to other layers (quotas, periodic GC)."""
    backend = section.get("backend", "s3" if "url" in section else "local")
    if backend == "local":
        return None
    if backend != "s3":
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f'[blobs] backend must be "local" or "s3", got {backend!r:.80}')
    raw = {k: v for k, v in section.items() if k in S3Settings.__struct_fields__}
    if "url" in section:
        raw.update(_url_fields(section["url"]))
    return _convert(raw, "config [blobs]")
