"""``aspen token login`` and ``logout`` keep the credentials file that clients
read when no token is given; a forgotten URL is sent no token at all."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

ASPEN = str(Path(sys.executable).with_name("aspen"))
URL = "http://127.0.0.1:9"


def cli(creds: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("ASPEN_TOKEN", "ASPEN_TOKEN_FILE", "ASPEN_URL")}
    env["ASPEN_CREDENTIALS"] = str(creds)
    return subprocess.run([ASPEN, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def test_login_then_logout(tmp_path, monkeypatch):
    creds = tmp_path / "credentials.json"
    token_file = tmp_path / "t.token"
    token_file.write_text("secret-token\n")
    assert cli(creds, "token", "login", "--url", URL, "--token-file", str(token_file)).returncode == 0
    assert json.loads(creds.read_text()) == {URL: {"token_file": str(token_file.resolve())}}
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600

    from aspen.client.credentials import token_for

    monkeypatch.setenv("ASPEN_CREDENTIALS", str(creds))
    assert token_for(["http://127.0.0.1:8", URL + "/"]) == "secret-token"

    out = cli(creds, "token", "logout", "--url", URL)
    assert out.returncode == 0 and "forgotten" in out.stdout
    assert json.loads(creds.read_text()) == {}
    assert token_for([URL]) is None
    again = cli(creds, "token", "logout", "--url", URL)
    assert again.returncode == 0 and "no entry" in again.stdout
