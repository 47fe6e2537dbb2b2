"""The one rule of which IP addresses are the inside of a network (the
node's own services, its LAN, its cloud's metadata endpoint) rather than a
public host: what a webhook or a plugin's egress may not reach by name."""

from __future__ import annotations

import ipaddress


def internal(address: str) -> bool:
    """Loopback, private, link-local, shared, reserved or multicast; an
    IPv4-mapped IPv6 address counts as its IPv4 address, a zone is ignored."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast
