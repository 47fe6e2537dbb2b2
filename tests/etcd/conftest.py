"""The session etcd cluster and a wiped store per test (see tests/etcd_fixtures.py)."""

from tests.etcd_fixtures import etcd_cluster, etcd_store  # noqa: F401
