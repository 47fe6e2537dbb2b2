"""The cluster's root key and id, made at first start and shared by every node.

Embedded backend: ``{data_dir}/auth/root.key`` and ``cluster_id`` (0600;
nodes sharing one data dir and SQLite file share them too). etcd backend:
``__auth:secret:root_key`` (which no request can read) and
``__auth:cluster_id`` in the store, created once
with a create-only compare-and-swap, so every node verifies every token
offline. The first admin token goes to ``{data_dir}/admin.token`` (0600).
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import biscuit_auth as bz

from aspen.auth.tokens import admin_rights, mint
from aspen.storage.protocol import KeyValueStore

log = logging.getLogger(__name__)

ROOT_KEY = "__auth:secret:root_key"  # aspen.storage.keyspace.SECRET_PREFIXES: no request reads it
CLUSTER_ID = "__auth:cluster_id"
ADMIN_TOKEN_FILE = "admin.token"


@dataclass(frozen=True)
class ClusterKeys:
    root: bz.PrivateKey
    public: bz.PublicKey
    cluster_id: str


def _private(hex_text: str) -> bz.PrivateKey:
    return bz.PrivateKey.from_bytes(bytes.fromhex(hex_text.strip()), bz.Algorithm.Ed25519)


def write_once(path: Path, text: str) -> str:
    """Write ``text`` to ``path`` (0600) unless it exists; the content that won."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic: fails if another process got there first
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_text()


async def _shared(kv: KeyValueStore, key: str, make: str) -> str:
    result = await kv.compare_and_swap(key, None, make.encode())
    if result.succeeded:
        return make
    found = await kv.get(key)
    assert found is not None  # a create-only CAS failed because the key exists
    return found.value.decode()


async def load_cluster_keys(data_dir: Path, kv: KeyValueStore, *, shared: bool) -> ClusterKeys:
    """The cluster's keys: from the store when ``shared`` (etcd), else the data dir."""
    new_key = bz.KeyPair().private_key.to_bytes().hex()
    new_id = secrets.token_hex(8)
    if shared:
        key_hex = await _shared(kv, ROOT_KEY, new_key)
        cluster_id = await _shared(kv, CLUSTER_ID, new_id)
    else:
        key_hex = write_once(data_dir / "auth" / "root.key", new_key + "\n")
        cluster_id = write_once(data_dir / "auth" / "cluster_id", new_id + "\n").strip()
    root = _private(key_hex)
    return ClusterKeys(root, bz.KeyPair.from_private_key(root).public_key, cluster_id)


def ensure_admin_token(data_dir: Path, keys: ClusterKeys) -> Path:
    """The node's admin token file, minted on first start (never expires;
    revoke it with ``aspen token revoke`` and delete the file to get a new one)."""
    path = data_dir / ADMIN_TOKEN_FILE
    if not path.exists():
        token = mint(keys.root, subject="admin", rights=admin_rights(), audience=keys.cluster_id)
        write_once(path, token + "\n")
        log.warning("admin token written to %s (mode 0600): keep it secret", path)
    return path
