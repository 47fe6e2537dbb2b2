"""Where a client finds its token when none is passed.

In order: ``ASPEN_TOKEN``, the file named by ``ASPEN_TOKEN_FILE``, then the
credentials file (``ASPEN_CREDENTIALS``, else
``$XDG_CONFIG_HOME/aspen/credentials.json``, else
``~/.config/aspen/credentials.json``), which maps node URLs to token files —
like kubectl's kubeconfig. ``aspen token login`` writes an entry; the run
command writes one for its loopback URL and admin token.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from aspen.errors import AspenError, ErrorCode


def credentials_path() -> Path:
    explicit = os.environ.get("ASPEN_CREDENTIALS")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "aspen" / "credentials.json"


def _entries(path: Path) -> dict[str, dict[str, str]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"credentials file {path} is unreadable: {exc}") from None
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"credentials file {path} is unreadable: {exc}") from None
    return data if isinstance(data, dict) else {}


def read_token_file(path: str | Path) -> str:
    try:
        token = Path(path).expanduser().read_text().strip()
    except OSError as exc:
        raise AspenError(ErrorCode.UNAUTHENTICATED, f"cannot read the token file {path}: {exc.strerror}") from None
    if not token:
        raise AspenError(ErrorCode.UNAUTHENTICATED, f"the token file {path} is empty")
    return token


def _write(path: Path, entries: dict[str, dict[str, str]]) -> None:
    """Replace the file atomically, 0600 (it names where tokens live)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(entries, f, indent=2)
    os.replace(tmp, path)


def remember(url: str, token_file: str | Path) -> Path:
    """Record that ``url`` is reached with the token in ``token_file``."""
    path = credentials_path()
    entries = _entries(path)
    entries[url.rstrip("/")] = {"token_file": str(Path(token_file).expanduser().resolve())}
    _write(path, entries)
    return path


def forget(url: str) -> bool:
    """Drop ``url``'s entry, so a later server on the same address is not sent
    this token; whether there was one."""
    path = credentials_path()
    entries = _entries(path)
    if entries.pop(url.rstrip("/"), None) is None:
        return False
    _write(path, entries)
    return True


def token_for(urls: list[str]) -> str | None:
    """The token to send to ``urls`` when the caller gave none."""
    if os.environ.get("ASPEN_TOKEN"):
        return os.environ["ASPEN_TOKEN"].strip()
    if os.environ.get("ASPEN_TOKEN_FILE"):
        return read_token_file(os.environ["ASPEN_TOKEN_FILE"])
    entries = _entries(credentials_path())
    for url in urls:
        entry = entries.get(url.rstrip("/"))
        if isinstance(entry, dict) and entry.get("token_file"):
            token_file = Path(entry["token_file"])
            if token_file.exists():
                return read_token_file(token_file)
    return None
