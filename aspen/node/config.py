"""Node configuration: one record, filled from ``aspen.toml`` then CLI flags.

The file's ``[node]`` table fills :class:`NodeConfig`; every other table
(``[plugins]``, ``[jobs]``, ``[cluster]`` …) is kept whole in ``sections``
for the layer that owns it.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec

from aspen.errors import AspenError, ErrorCode

DEFAULT_PORT = 7420


class NodeConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    data_dir: str = "./aspen-data"
    listen: str = f"127.0.0.1:{DEFAULT_PORT}"
    node_id: str | None = None  # None: generated once and kept in the data dir
    kv_backend: Literal["sqlite"] = "sqlite"
    etcd: list[str] = []  # etcd endpoints (host:port): when set, KV lives in etcd instead of SQLite
    max_request_seconds: float = 30.0  # cap on any caller's deadline
    drain_seconds: float = 10.0  # how long SIGTERM waits for in-flight requests
    log_level: str = "info"
    http_server: Literal["auto", "granian", "uvicorn"] = "auto"  # auto: ASPEN_HTTP_SERVER, else uvicorn
    metrics_listen: str | None = None  # HOST:PORT: serve /metrics there (only there) instead
    # browsers: Host names besides the node's own (listen, advertise_url, localhost,
    # 127.0.0.1, ::1; "*" turns the check off), and the Origins allowed to call it
    allowed_hosts: list[str] = []
    allowed_origins: list[str] = []  # exact "scheme://host[:port]"; empty: any Origin is refused
    # TLS: serve HTTPS with this certificate and key; verify peer nodes with tls_ca
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    # etcd: CA for its TLS, a client certificate, and etcd's own user/password auth
    etcd_ca: str | None = None
    etcd_cert: str | None = None
    etcd_key: str | None = None
    etcd_user: str | None = None
    etcd_password: str | None = None
    sections: dict[str, dict[str, Any]] = {}

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]

    @property
    def advertise_url(self) -> str:
        """The URL peers use to reach this node: ``[cluster] advertise_url``,
        else ``http(s)://{listen}``."""
        url = self.sections.get("cluster", {}).get("advertise_url")
        return str(url).rstrip("/") if url else f"{'https' if self.tls_cert else 'http'}://{self.listen}"


def _check_pairs(config: NodeConfig) -> None:
    """Settings that only work together, and files that must exist."""
    for a, b in (("tls_cert", "tls_key"), ("etcd_cert", "etcd_key"), ("etcd_user", "etcd_password")):
        if (getattr(config, a) is None) != (getattr(config, b) is None):
            raise AspenError(ErrorCode.INVALID_ARGUMENT, f"invalid node config: {a} and {b} go together")
    for name in ("tls_cert", "tls_key", "tls_ca", "etcd_ca", "etcd_cert", "etcd_key"):
        path = getattr(config, name)
        if path is not None and not Path(path).is_file():
            raise AspenError(ErrorCode.INVALID_ARGUMENT, f"invalid node config: {name} {path} is not a file")


def split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"listen address must be HOST:PORT, got {listen!r}")
    return host.strip("[]"), int(port)


def load_config(path: str | Path | None = None, **overrides: Any) -> NodeConfig:
    """Read ``path`` (if given), then apply the non-None ``overrides``."""
    raw: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}
    if path is not None:
        try:
            doc = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise AspenError(ErrorCode.INVALID_ARGUMENT, f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise AspenError(ErrorCode.INVALID_ARGUMENT, f"config file {path} is not valid TOML: {exc}") from None
        for name, value in doc.items():
            if name == "node" and isinstance(value, dict):
                raw.update(value)
            elif isinstance(value, dict):
                sections[name] = value
            else:
                raise AspenError(
                    ErrorCode.INVALID_ARGUMENT, f"config file {path}: top-level key {name!r} belongs in a [node] table"
                )
    raw.update({k: v for k, v in overrides.items() if v is not None})
    raw["sections"] = sections
    try:
        config = msgspec.convert(raw, NodeConfig)
    except msgspec.ValidationError as exc:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"invalid node config: {exc}") from None
    split_listen(config.listen)
    if config.metrics_listen is not None:
        split_listen(config.metrics_listen)
    _check_pairs(config)
    return config
