"""The ``[federation]`` table of aspen.toml, decoded once and strictly (a
typo such as ``peer = [...]`` is an error, not a silently empty list)."""

from __future__ import annotations

from typing import Any

import msgspec

from aspen.errors import AspenError, ErrorCode

MAX_NAME_BYTES = 128
MAX_PEERS = 64


class ProxyConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    enabled: bool = False
    max_hops: int = 3
    max_targets: int = 3
    timeout: float = 15.0  # seconds for all targets of one request together
    public: bool = False  # also forward to clusters that are neither trusted nor blocked


class FederationConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str | None = None  # None: "aspen-{first 8 hex of the cluster key}"
    peers: list[str] = []  # other clusters' node URLs, announcements are exchanged with them
    announce_interval: float = 60.0  # seconds between pushes; announcements expire after 3x
    gossip_hops: int = 2  # how far an announcement travels onward through trusted peers
    accept_public: bool = False  # serve proxied requests from clusters that are not trusted (never blocked ones)
    proxy: ProxyConfig = ProxyConfig()


def federation_config(sections: dict[str, Any]) -> FederationConfig:
    try:
        config = msgspec.convert(sections.get("federation", {}), FederationConfig)
    except msgspec.ValidationError as exc:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"invalid [federation] config: {exc}") from None
    if config.name is not None and not 0 < len(config.name.encode()) <= MAX_NAME_BYTES:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"[federation] name must be 1-{MAX_NAME_BYTES} bytes")
    if len(config.peers) > MAX_PEERS:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"[federation] peers: at most {MAX_PEERS}")
    if not 0.05 <= config.announce_interval <= 86400:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, "[federation] announce_interval must be 0.05-86400 seconds")
    p = config.proxy
    if not (0 <= p.max_hops <= 8 and 1 <= p.max_targets <= 8 and 0 < p.timeout <= 300 and 0 <= config.gossip_hops <= 8):
        raise AspenError(
            ErrorCode.INVALID_ARGUMENT,
            "[federation.proxy] needs max_hops 0-8, max_targets 1-8, timeout 0-300 s; gossip_hops 0-8",
        )
    return config
