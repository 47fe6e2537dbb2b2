"""Node config from aspen.toml and flags."""

from __future__ import annotations

import pytest

from aspen.errors import AspenError, ErrorCode
from aspen.node.config import load_config


def test_defaults_need_no_file():
    cfg = load_config()
    assert cfg.data_dir == "./aspen-data" and (cfg.host, cfg.port) == ("127.0.0.1", 7420)


def test_file_then_flags(tmp_path):
    path = tmp_path / "aspen.toml"
    path.write_text('[node]\ndata_dir = "/srv/a"\nlisten = "127.0.0.1:9000"\n\n[plugins]\nallow_unsigned = true\n')
    cfg = load_config(path, listen="127.0.0.1:9001", data_dir=None)
    assert cfg.data_dir == "/srv/a" and cfg.port == 9001
    assert cfg.sections == {"plugins": {"allow_unsigned": True}}


@pytest.mark.parametrize(
    "text, needle",
    [
        ("[node]\nlisen = 'x'\n", "lisen"),
        ("[node]\nlisten = 'nohost'\n", "HOST:PORT"),
        ("[node]\ndrain_seconds = 'soon'\n", "drain_seconds"),
        ("listen = '1.2.3.4:5'\n", "[node]"),
        ("[node\n", "TOML"),
    ],
)
def test_bad_config_names_the_problem(tmp_path, text, needle):
    path = tmp_path / "aspen.toml"
    path.write_text(text)
    with pytest.raises(AspenError) as err:
        load_config(path)
    assert err.value.code == ErrorCode.INVALID_ARGUMENT and needle in err.value.message


def test_missing_file(tmp_path):
    with pytest.raises(AspenError) as err:
        load_config(tmp_path / "nope.toml")
    assert "does not exist" in err.value.message
