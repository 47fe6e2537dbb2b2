"""Fixtures for the blob store tests: a fresh store per test."""

from __future__ import annotations

import pytest
from blake3 import blake3

from aspen.storage.blobs import LocalBlobStore


def pseudo_random(n: int, seed: bytes = b"aspen", offset: int = 0) -> bytes:
    """Deterministic bytes (BLAKE3 XOF output) that never repeat a segment."""
    return blake3(seed).digest(length=n, seek=offset)


@pytest.fixture
async def store(tmp_path):
    s = await LocalBlobStore.open(tmp_path / "blobs")
    yield s
    await s.close()
