"""Hypothesis state machine: each backend, driven by random operations, must
agree with a model that is a dict plus a revision counter.

The model only assumes that each write which changes something moves the
revision up by exactly one (true for every backend when nobody else writes),
not where revisions start.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from aspen.storage.records import Compare, DeleteOp, GetOp, PutOp
from tests.storage.conftest import KV_BACKENDS, KV_FACTORIES

keys = st.text(alphabet="ab/é\U0001f600", min_size=1, max_size=3)
values = st.binary(max_size=8)


class KvMachine(RuleBasedStateMachine):
    """Model entry: key -> (value, version, create_revision, mod_revision)."""

    backend: str
    request: pytest.FixtureRequest
    tmp_factory: pytest.TempPathFactory

    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.store = self.run(KV_FACTORIES[self.backend](self.request, self.tmp_factory.mktemp("model")))
        self.model: dict[str, tuple[bytes, int, int, int]] = {}
        self.rev = self.run(self.store.current_revision())

    def run(self, coro):
        return self.runner.run(coro)

    def teardown(self) -> None:
        try:
            self.run(self.store.close())
        finally:
            self.runner.close()

    # --- model helpers ---

    def _bumped(self, revision: int) -> int:
        assert revision == self.rev + 1, (revision, self.rev)
        self.rev = revision
        return revision

    def _model_put(self, key: str, value: bytes, rev: int) -> None:
        old = self.model.get(key)
        self.model[key] = (value, old[1] + 1, old[2], rev) if old else (value, 1, rev, rev)

    def _check_entry(self, key: str, kv) -> None:
        want = self.model.get(key)
        if want is None:
            assert kv is None, (key, kv)
        else:
            assert kv is not None, key
            assert (kv.key, kv.value, kv.version, kv.create_revision, kv.mod_revision) == (key, *want)

    # --- rules ---

    @initialize()
    def empty(self) -> None:
        assert self.run(self.store.scan()).entries == []

    @rule(key=keys, value=values)
    def put(self, key: str, value: bytes) -> None:
        rev = self._bumped(self.run(self.store.put(key, value)))
        self._model_put(key, value, rev)

    @rule(key=keys)
    def delete(self, key: str) -> None:
        existed = self.run(self.store.delete(key))
        assert existed == (key in self.model)
        if existed:
            self.rev += 1
            del self.model[key]

    @rule(prefix=keys)
    def delete_prefix(self, prefix: str) -> None:
        gone = [k for k in self.model if k.startswith(prefix)]
        assert self.run(self.store.delete_prefix(prefix)) == len(gone)
        if gone:
            self.rev += 1
            for k in gone:
                del self.model[k]

    @rule(key=keys)
    def get(self, key: str) -> None:
        self._check_entry(key, self.run(self.store.get(key)))

    @rule(key=keys, use_model=st.booleans(), other=st.none() | values, new=values)
    def compare_and_swap(self, key: str, use_model: bool, other: bytes | None, new: bytes) -> None:
        current = self.model.get(key)
        expected = (current[0] if current else None) if use_model else other
        res = self.run(self.store.compare_and_swap(key, expected, new))
        holds = (current is None) if expected is None else (current is not None and current[0] == expected)
        assert res.succeeded == holds
        if holds:
            self._model_put(key, new, self._bumped(res.revision))
        self._check_entry(key, res.actual)

    @rule(key=keys, use_model=st.booleans(), other=values)
    def compare_and_delete(self, key: str, use_model: bool, other: bytes) -> None:
        current = self.model.get(key)
        expected = current[0] if (use_model and current) else other
        res = self.run(self.store.compare_and_delete(key, expected))
        holds = current is not None and current[0] == expected
        assert res.succeeded == holds
        if holds:
            self._bumped(res.revision)
            del self.model[key]
            assert res.actual is None
        else:
            self._check_entry(key, res.actual)

    @rule(ops=st.dictionaries(keys, st.none() | values, max_size=6))
    def batch_write(self, ops: dict[str, bytes | None]) -> None:
        """Distinct keys per batch: etcd refuses a key twice in one txn."""
        batch = [DeleteOp(k) if v is None else PutOp(k, v) for k, v in ops.items()]
        changes = any(v is not None or k in self.model for k, v in ops.items())
        rev = self.run(self.store.batch_write(batch))
        if not changes:
            assert rev == self.rev
            return
        self._bumped(rev)
        for k, v in ops.items():
            if v is None:
                self.model.pop(k, None)
            else:
                self._model_put(k, v, rev)

    @rule(guard=keys, right=st.booleans(), writes=st.dictionaries(keys, st.none() | values, max_size=4), fallback=keys)
    def transaction(self, guard: str, right: bool, writes: dict[str, bytes | None], fallback: str) -> None:
        version = self.model[guard][1] if guard in self.model else 0
        cmp = Compare(guard, "version", "==", version if right else version + 1)
        success = [DeleteOp(k) if v is None else PutOp(k, v) for k, v in writes.items()]
        res = self.run(self.store.transaction([cmp], success, [GetOp(fallback)]))
        assert res.succeeded == right and res.failed_compare == (None if right else 0)
        if not right:
            assert res.revision == self.rev
            self._check_entry(fallback, res.results[0].kv)
            return
        changes = any(v is not None or k in self.model for k, v in writes.items())
        if changes:
            self._bumped(res.revision)
        for (k, v), result in zip(writes.items(), res.results):
            if v is None:
                assert result.deleted == (1 if k in self.model else 0)
                self.model.pop(k, None)
            else:
                assert result.revision == res.revision
                self._model_put(k, v, res.revision)

    @rule(prefix=st.none() | keys, limit=st.integers(1, 5))
    def scan_all_pages(self, prefix: str | None, limit: int) -> None:
        want = sorted((k for k in self.model if prefix is None or k.startswith(prefix)), key=lambda k: k.encode())
        seen: list[str] = []
        token = None
        while True:
            page = self.run(self.store.scan(prefix, limit=limit, continuation=token))
            assert len(page.entries) <= limit
            for kv in page.entries:
                self._check_entry(kv.key, kv)
            seen += [kv.key for kv in page.entries]
            if not page.is_truncated:
                break
            token = page.continuation_token
        assert seen == want

    @rule(start=keys, end=keys)
    def scan_range(self, start: str, end: str) -> None:
        lo, hi = start.encode(), end.encode()
        want = sorted((k for k in self.model if lo <= k.encode() < hi), key=lambda k: k.encode())
        assert [kv.key for kv in self.run(self.store.scan(start=start, end=end)).entries] == want

    @invariant()
    def revision_matches(self) -> None:
        assert self.run(self.store.current_revision()) == self.rev


@pytest.mark.parametrize("backend", KV_BACKENDS)
def test_store_matches_model(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    machine = type(
        f"KvMachine_{backend}",
        (KvMachine,),
        {"backend": backend, "request": request, "tmp_factory": tmp_path_factory},
    )
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=30,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
