"""Every code a job can end with that Aspen itself sets is an ErrorCode
member: none is spelled inline in the queue or the pool."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from aspen.errors import ErrorCode

JOBS = Path(__file__).resolve().parents[2] / "aspen" / "jobs"
MODULES = ["store.py", "job_records.py", "claims.py", "dependencies.py", "retention.py", "pool.py", "model.py"]


def _inline_codes(tree: ast.AST) -> list[str]:
    """String constants passed as ``code=``/``error_code=`` or as a ``code`` default."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg in ("code", "error_code"):
            values = [node.value]
        elif isinstance(node, ast.arguments):
            names = [a.arg for a in node.kwonlyargs]
            values = [d for n, d in zip(names, node.kw_defaults) if n == "code" and d is not None]
        else:
            continue
        found += [v.value for v in values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
    return found


@pytest.mark.parametrize("module", MODULES)
def test_job_error_codes_come_from_the_catalogue(module: str) -> None:
    assert _inline_codes(ast.parse((JOBS / module).read_text())) == []


def test_the_job_codes_keep_their_wire_spelling() -> None:
    codes = ["JOB_FAILED", "DEPENDENCY_FAILED", "CANCELLED", "WORKER_LOST", "WORKER_STOPPED", "WORKER_ERROR"]
    assert [ErrorCode(c).value for c in codes] == codes


def test_the_check_sees_an_inline_code() -> None:
    assert sorted(_inline_codes(ast.parse('fail(code="OOPS")\ndef f(*, code: str = "X"): ...'))) == ["OOPS", "X"]
