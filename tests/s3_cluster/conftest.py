"""Nodes on the session etcd cluster with their blobs in the session SeaweedFS."""

from __future__ import annotations

import secrets

import pytest

from aspen.cluster.seaweed_launcher import access_env
from tests.etcd_fixtures import etcd_cluster, etcd_store  # noqa: F401
from tests.lifecycle.conftest import modules  # noqa: F401
from tests.seaweed_fixtures import BUCKET, seaweedfs  # noqa: F401


@pytest.fixture
def blob_store_url(seaweedfs, monkeypatch) -> str:  # noqa: F811
    """``--blob-store`` for a fresh prefix; credentials come from the AWS environment variables."""
    for k, v in access_env().items():
        monkeypatch.setenv(k, v)
    return f"s3://{BUCKET}?endpoint={seaweedfs.endpoint}&prefix=c-{secrets.token_hex(6)}/&cleanup_seconds=1"
