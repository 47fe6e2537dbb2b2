"""The ``allowed_hosts`` patterns of a process plugin's manifest and the one
place they are judged: which ``host:port`` a plugin may reach, and which
resolved addresses it may reach it at.

A pattern is ``host[:port]``: an exact DNS name (``api.example.com``), a
wildcard ``*.example.com`` (any name below it, not ``example.com`` itself),
an IPv4 literal or a bracketed IPv6 literal (``[2001:db8::1]:8443``). Without
a port it allows 80 and 443, the web's; with one, only that port. A name
pattern never reaches a loopback, private, link-local or otherwise
non-global or multicast address (:func:`aspen.addresses.internal`: so a DNS answer cannot point a plugin at the node's own
etcd or admin port); only an IP literal pattern reaches exactly that address.
"""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple

from aspen.addresses import internal

MAX_ALLOWED_HOSTS = 32
MAX_PATTERN_BYTES = 262  # "*." + a 253-byte name + ":65535"
DEFAULT_PORTS = (80, 443)
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _dns_name(text: str) -> bool:
    labels = text.split(".")
    return len(text) <= 253 and all(_LABEL.fullmatch(label) for label in labels) and not labels[-1].isdigit()


def split_host_port(text: str) -> tuple[str, int | None]:
    """``host[:port]`` or ``[v6][:port]`` → (host, port or None); ValueError if malformed."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")) or _ip(host) is None or _ip(host).version != 6:
            raise ValueError("an IPv6 literal is written [address] or [address]:port")
        port_text = rest[1:] if rest else None
    else:
        host, sep, port_text = text.rpartition(":") if ":" in text else (text, "", None)
        if ":" in host:
            raise ValueError("an IPv6 literal must be bracketed: [address]:port")
    port = None
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535 or port_text != str(int(port_text)):
            raise ValueError(f"port {port_text!r} must be 1-65535")
        port = int(port_text)
    return host, port


def normal_host(host: str) -> str:
    """A target's host, lowercased and canonical (IP literals compressed); ValueError if neither a name nor an IP."""
    host = host.lower().removesuffix(".")
    address = _ip(host)
    if address is not None:
        return str(address)
    if not _dns_name(host):
        raise ValueError(f"{host[:64]!r} is neither a DNS name nor an IP literal")
    return host


class HostPattern(NamedTuple):
    host: str  # a name, a wildcard's suffix (without "*."), or a canonical IP literal
    wildcard: bool
    ip: bool
    ports: tuple[int, ...]

    def matches(self, host: str, port: int) -> bool:
        """``host`` as :func:`normal_host` returns it."""
        if port not in self.ports:
            return False
        if self.wildcard:
            return host.endswith("." + self.host) and _ip(host) is None
        return host == self.host


def parse_pattern(text: str) -> HostPattern:
    """ValueError with the reason when ``text`` is not a pattern."""
    if not text or len(text.encode()) > MAX_PATTERN_BYTES or text != text.strip() or text != text.lower():
        raise ValueError(f"a pattern is 1-{MAX_PATTERN_BYTES} bytes, lowercase, without spaces")
    host, port = split_host_port(text)
    ports = DEFAULT_PORTS if port is None else (port,)
    wildcard = host.startswith("*.")
    name = host[2:] if wildcard else host
    address = _ip(name)
    if address is not None and not wildcard:
        return HostPattern(str(address), False, True, ports)
    if "*" in name or not _dns_name(name):
        raise ValueError(f"{host!r} is not a DNS name, a *.suffix wildcard or an IP literal")
    return HostPattern(name, wildcard, False, ports)


def problem(patterns: tuple[str, ...]) -> str | None:
    """Why one of a manifest's ``allowed_hosts`` is refused (None: none is; the count is its own rule)."""
    for text in patterns:
        try:
            parse_pattern(text)
        except ValueError as exc:
            return f"allowed_hosts {text[:MAX_PATTERN_BYTES]!r}: {exc}"
    return None


def reachable(address: str, pattern: HostPattern) -> bool:
    """May a connection allowed by ``pattern`` go to the resolved ``address``?"""
    if pattern.ip:  # an IP literal pattern is matched only by that literal, which resolves to itself
        return str(ipaddress.ip_address(address.split("%", 1)[0])) == pattern.host
    return not internal(address)
