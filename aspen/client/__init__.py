"""Python clients of an Aspen node: :class:`Client` (asyncio) and
:class:`SyncClient` (the same API, blocking)."""

from aspen.client.async_client import Client
from aspen.client.sync_client import SyncClient

__all__ = ["Client", "SyncClient"]
