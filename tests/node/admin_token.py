"""The admin token of a test node, for tests that speak raw HTTP: in the
``Authorization`` header and in the envelope's ``token``, both ways a
client may send it."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def admin_token(data_dir: Path) -> str:
    return (Path(data_dir) / "admin.token").read_text().strip()


def auth_headers(data_dir: Path) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_token(data_dir)}"}


def envelope(data_dir: Path, type_: str, body: Any = None, **fields: Any) -> dict[str, Any]:
    """An RPC envelope carrying the token."""
    env: dict[str, Any] = {"type": type_, "token": admin_token(data_dir), **fields}
    if body is not None:
        env["body"] = body
    return env
