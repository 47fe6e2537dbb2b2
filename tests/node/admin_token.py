"""The admin token of a test node, for tests that speak raw HTTP.

A node that requires tokens writes one to ``{data_dir}/admin.token``; a node
without that file takes requests without one. Tests send it both ways a
client may: the ``Authorization`` header and the envelope's ``token``."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def admin_token(data_dir: Path) -> str | None:
    path = Path(data_dir) / "admin.token"
    return path.read_text().strip() if path.exists() else None


def auth_headers(data_dir: Path) -> dict[str, str]:
    token = admin_token(data_dir)
    return {"Authorization": f"Bearer {token}"} if token else {}


def envelope(data_dir: Path, type_: str, body: Any = None, **fields: Any) -> dict[str, Any]:
    """An RPC envelope carrying the token (when there is one)."""
    env: dict[str, Any] = {"type": type_, **fields}
    if body is not None:
        env["body"] = body
    token = admin_token(data_dir)
    if token:
        env["token"] = token
    return env
