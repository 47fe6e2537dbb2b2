"""The hooks of a cluster in KV: add, read, list, remove, with the quotas.

``__hooks:index`` maps every hook's name to its owner. Adding or removing a
hook changes the index, the record and the secret in one transaction that
compares the index, so the quotas (``[hooks] max_hooks`` in the cluster,
``max_hooks_per_owner`` each) hold however many nodes add at once.
"""

from __future__ import annotations

import msgspec

from aspen.errors import AspenError, ErrorCode
from aspen.hookapp.records import CURSOR_PREFIX, RECORDS_PREFIX, SECRET_PREFIX, HookRecord, HookSecret, decode
from aspen.hooks.subscriptions import Cursor, SubscriptionStore
from aspen.jobs.job_records import unchanged
from aspen.storage.pages import scan_all
from aspen.storage.protocol import KeyValueStore
from aspen.storage.records import Compare, DeleteOp, PutOp

INDEX_KEY = "__hooks:index"
MAX_HOOKS = 1000
MAX_HOOKS_PER_OWNER = 100
MAX_CAS_ATTEMPTS = 32


def cursors(kv: KeyValueStore) -> SubscriptionStore:
    """Where the dispatcher keeps each hook's cursor and counts."""
    return SubscriptionStore(kv, RECORDS_PREFIX, CURSOR_PREFIX)


class HookStore:
    def __init__(
        self, kv: KeyValueStore, *, max_hooks: int = MAX_HOOKS, max_per_owner: int = MAX_HOOKS_PER_OWNER
    ) -> None:
        self.kv = kv
        self.max_hooks = max_hooks
        self.max_per_owner = max_per_owner
        self.cursors = cursors(kv)

    async def _index(self):
        kv = await self.kv.get(INDEX_KEY)
        return kv, ({} if kv is None else msgspec.json.decode(kv.value, type=dict[str, str]))

    async def add(self, record: HookRecord, secret: HookSecret) -> HookRecord:
        name = record.name
        for _ in range(MAX_CAS_ATTEMPTS):
            current, index = await self._index()
            if name in index:
                raise AspenError(ErrorCode.HOOK_EXISTS, f"a hook named {name!r} exists", name=name)
            if len(index) >= self.max_hooks:
                raise AspenError(
                    ErrorCode.HOOK_QUOTA_EXCEEDED, f"the cluster has {len(index)} hooks, at most {self.max_hooks}",
                    quota="max_hooks", limit=self.max_hooks,
                )  # fmt: skip
            mine = sum(1 for o in index.values() if o == record.owner)
            if mine >= self.max_per_owner:
                raise AspenError(
                    ErrorCode.HOOK_QUOTA_EXCEEDED, f"{record.owner!r} has {mine} hooks, at most {self.max_per_owner}",
                    quota="max_hooks_per_owner", limit=self.max_per_owner,
                )  # fmt: skip
            index[name] = record.owner
            ops = [
                PutOp(INDEX_KEY, msgspec.json.encode(index)),
                PutOp(RECORDS_PREFIX + name, msgspec.json.encode(record)),
                PutOp(SECRET_PREFIX + name, msgspec.json.encode(secret)),
                DeleteOp(CURSOR_PREFIX + name),
            ]
            compares = [unchanged(INDEX_KEY, current), Compare(RECORDS_PREFIX + name, "exists", "==", False)]
            if (await self.kv.transaction(compares, ops)).succeeded:
                return record
        raise AspenError(ErrorCode.UNAVAILABLE, "hooks changed too often meanwhile; retry")

    async def get(self, name: str) -> HookRecord:
        kv = await self.kv.get(RECORDS_PREFIX + name)
        if kv is None:
            raise AspenError(ErrorCode.HOOK_NOT_FOUND, f"no hook {name!r}", name=name)
        return decode(kv.value, HookRecord)

    async def secret(self, name: str) -> HookSecret:
        kv = await self.kv.get(SECRET_PREFIX + name)
        if kv is None:
            raise AspenError(ErrorCode.HOOK_NOT_FOUND, f"no hook {name!r}", name=name)
        return decode(kv.value, HookSecret)

    async def all(self) -> list[HookRecord]:
        return [decode(e.value, HookRecord) async for e in scan_all(self.kv, RECORDS_PREFIX)]

    async def cursor(self, name: str) -> Cursor:
        return await self.cursors.cursor(name)

    async def remove(self, name: str) -> None:
        for _ in range(MAX_CAS_ATTEMPTS):
            current, index = await self._index()
            if index.pop(name, None) is None:
                raise AspenError(ErrorCode.HOOK_NOT_FOUND, f"no hook {name!r}", name=name)
            ops = [
                PutOp(INDEX_KEY, msgspec.json.encode(index)),
                DeleteOp(RECORDS_PREFIX + name),
                DeleteOp(SECRET_PREFIX + name),
                DeleteOp(CURSOR_PREFIX + name),
            ]
            if (await self.kv.transaction([unchanged(INDEX_KEY, current)], ops)).succeeded:
                return
        raise AspenError(ErrorCode.UNAVAILABLE, "hooks changed too often meanwhile; retry")
