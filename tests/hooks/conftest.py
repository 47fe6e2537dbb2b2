"""The dispatcher tests run on every KV backend (tests/storage/conftest.py):
cursors are revisions, and both backends must resume from them. The real-node
tests share the fixtures of real_nodes.py."""

from tests.hooks.real_nodes import wasm_built  # noqa: F401
from tests.storage.conftest import etcd_cluster, kv  # noqa: F401
