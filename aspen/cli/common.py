"""What every command group shares: the ``--url``/``--json`` options, the
client factory, error reporting (code and message, non-zero exit) and
output helpers."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import msgspec
import typer
from rich.console import Console
from rich.text import Text

from aspen.client import SyncClient
from aspen.errors import AspenError

UrlOpt = Annotated[
    str | None,
    typer.Option("--url", envvar="ASPEN_URL", help="Node URL(s), comma-separated. Default http://127.0.0.1:7420."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON (bytes as base64).")]

# Data (keys, values, tags, names, messages from a node) is printed through
# ``literal``: Rich would read ``[bold]`` inside it as markup and ``:smile:``
# as an emoji, so a key could be disguised as another.
console = Console(emoji=False)
err_console = Console(stderr=True, emoji=False)
F = TypeVar("F", bound=Callable[..., Any])


def connect(url: str | None, *, token: str | None = None) -> SyncClient:
    """A client for ``url`` (or ASPEN_URL); the token is ``token``, else found
    as :mod:`aspen.client.credentials` says (ASPEN_TOKEN, ASPEN_TOKEN_FILE,
    the credentials file)."""
    return SyncClient(url, token=token)


def literal(text: str) -> Text:
    """Data shown as it is: no Rich markup, no emoji codes."""
    return Text(text)


def fail(code: str, message: str) -> typer.Exit:
    err_console.print(Text.assemble(("error", "bold red"), f": {code}: {message}"), soft_wrap=True)
    return typer.Exit(1)


def reports_errors(func: F) -> F:
    """Turn an AspenError into ``error: CODE: message`` and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except AspenError as exc:
            raise fail(exc.code, exc.message) from None

    return wrapper  # type: ignore[return-value]


def print_json(obj: Any) -> None:
    sys.stdout.write(msgspec.json.encode(obj).decode() + "\n")


def show_bytes(value: bytes) -> str:
    """Text when it decodes as UTF-8, else a short hex preview."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + value[:32].hex() + ("…" if len(value) > 32 else "")
