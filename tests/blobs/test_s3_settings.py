"""``[blobs]`` and ``--blob-store s3://…``: every bad value is a clear INVALID_ARGUMENT."""

from __future__ import annotations

import subprocess

import pytest

from aspen.errors import AspenError, ErrorCode
from aspen.storage.s3_settings import S3Settings, blob_backend, settings_from_url
from tests.node.node_process import ASPEN


def test_url_and_section_fill_one_record():
    s = settings_from_url(
        "s3://my-bucket?endpoint=http://127.0.0.1:8333&region=eu-west-1&path_style=false&cache_bytes=10"
    )
    assert (s.bucket, s.endpoint, s.region, s.path_style, s.cache_bytes) == (
        "my-bucket", "http://127.0.0.1:8333", "eu-west-1", False, 10,
    )  # fmt: skip
    assert blob_backend({}) is None and blob_backend({"backend": "local", "quota_bytes": 5}) is None
    from_table = blob_backend({"backend": "s3", "bucket": "b-1", "endpoint": "https://s3.example", "quota_bytes": 5})
    assert from_table == S3Settings(bucket="b-1", endpoint="https://s3.example")
    # the URL wins over the table's own keys; keys of other layers are left alone
    merged = blob_backend({"backend": "s3", "url": "s3://from-url", "bucket": "from-table", "region": "r1"})
    assert (merged.bucket, merged.region) == ("from-url", "r1")


@pytest.mark.parametrize(
    "url",
    [
        "http://bucket",
        "s3://",
        "s3://bucket/path",
        "s3://UPPER",
        "s3://ab",
        "s3://" + "b" * 64,
        "s3://bucket?endpoint=ftp://x",
        "s3://bucket?endpoint=notaurl",
        "s3://bucket?nope=1",
        "s3://bucket?region=a&region=b",
        "s3://bucket?cache_bytes=-1",
        "s3://bucket?cache_bytes=lots",
        "s3://bucket?access_key_id=only-half",
        "s3://bucket?" + "&".join(f"k{i}=v" for i in range(100)),
        "s3://bucket?prefix=" + "p" * 1000,
        5,
        None,
    ],
)
def test_bad_url(url):
    with pytest.raises(AspenError) as exc:
        settings_from_url(url) if isinstance(url, str) else blob_backend({"backend": "s3", "url": url})
    assert exc.value.code == ErrorCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "section",
    [
        {"backend": "ceph"},
        {"backend": 3},
        {"backend": "s3"},  # no bucket
        {"backend": "s3", "bucket": "ok-bucket", "path_style": "maybe"},
        {"backend": "s3", "bucket": "ok-bucket", "cleanup_seconds": float("inf")},
        {"backend": "s3", "bucket": {"nested": {"deeply": [1]}}},
    ],
)
def test_bad_section(section):
    with pytest.raises(AspenError) as exc:
        blob_backend(section)
    assert exc.value.code == ErrorCode.INVALID_ARGUMENT


def test_cli_refuses_a_bad_blob_store(tmp_path):
    out = subprocess.run(
        [ASPEN, "node", "start", "--data-dir", str(tmp_path), "--listen", "127.0.0.1:0", "--blob-store", "s3://x"],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1 and "INVALID_ARGUMENT" in out.stderr + out.stdout, out


def test_cli_unreachable_store_fails_fast(tmp_path):
    out = subprocess.run(
        [ASPEN, "node", "start", "--data-dir", str(tmp_path), "--listen", "127.0.0.1:0",
         "--blob-store", "s3://bucket?endpoint=http://127.0.0.1:9&connect_timeout=0.5"],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1 and "STORAGE_UNAVAILABLE" in out.stderr + out.stdout, out
