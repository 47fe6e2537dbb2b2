"""The dispatcher tests run on every KV backend (tests/storage/conftest.py):
cursors are revisions, and both backends must resume from them."""

from tests.storage.conftest import etcd_cluster, kv  # noqa: F401
