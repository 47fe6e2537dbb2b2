"""Webhook delivery: one signed POST, and the guard on where it may go.

Each POST carries ``X-Aspen-Signature: sha256=<hex>``, the HMAC-SHA256 of
``{timestamp}.{body}`` under the hook's own key (shown once, at add), the
``X-Aspen-Timestamp`` it covers (so a receiver can refuse replays) and
``X-Aspen-Event-Id`` (the same for every retry of one event, so a receiver
can deduplicate).

Targets on loopback, private, link-local, multicast or reserved addresses
are refused (``HOOK_WEBHOOK_FORBIDDEN``) unless ``[hooks] webhook_allow``
lists them (networks or addresses): a hook must not reach the node's own
services or its cloud's metadata endpoint. The check is made at add and
again on the resolved addresses before every POST, which connects to the
address checked (the ``Host`` header and TLS name stay the URL's), so DNS
cannot turn an allowed name into a forbidden address later.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import socket
import time
from collections.abc import Iterable
from urllib.parse import urlsplit

import httpx

from aspen.addresses import internal
from aspen.errors import AspenError, ErrorCode

SIGNATURE_HEADER = "X-Aspen-Signature"
TIMESTAMP_HEADER = "X-Aspen-Timestamp"
EVENT_HEADER = "X-Aspen-Event-Id"
MAX_URL_BYTES = 2048

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def allowlist(entries: object) -> tuple[Network, ...]:
    """``[hooks] webhook_allow``: addresses or networks exempt from the guard."""
    if entries is None:
        return ()
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise AspenError(ErrorCode.INVALID_ARGUMENT, "[hooks] webhook_allow must be a list of addresses or networks")
    try:
        return tuple(ipaddress.ip_network(e, strict=False) for e in entries)
    except ValueError as exc:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"[hooks] webhook_allow: {exc}") from None


def check_url(url: object) -> tuple[str, int]:
    """``HOOK_WEBHOOK_INVALID`` unless an absolute http(s) URL with a host and
    no credentials; returns its host and port."""

    def bad(why: str) -> AspenError:
        return AspenError(ErrorCode.HOOK_WEBHOOK_INVALID, f"webhook URL {str(url)[:120]!r}: {why}")

    if not isinstance(url, str) or not 0 < len(url.encode("utf-8", "surrogatepass")) <= MAX_URL_BYTES:
        raise bad(f"must be 1-{MAX_URL_BYTES} bytes")
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        raise bad("has whitespace or a control character")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise bad(str(exc)) from None
    if parts.scheme not in ("http", "https"):
        raise bad("must be http or https")
    if not parts.hostname:
        raise bad("has no host")
    if parts.username is not None or parts.password is not None:
        raise bad("must not carry credentials")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def _forbidden(address: str, allowed: Iterable[Network]) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return internal(address) and not any(ip in net for net in allowed)


async def check_target(url: str, allowed: tuple[Network, ...]) -> str:
    """The URL's form, then every address its host resolves to; returns the
    first, which the POST then connects to (a second lookup could answer otherwise)."""
    host, port = check_url(url)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise AspenError(ErrorCode.HOOK_WEBHOOK_INVALID, f"webhook host {host!r} does not resolve: {exc}") from None
    for info in infos:
        if _forbidden(str(info[4][0]), allowed):
            raise AspenError(
                ErrorCode.HOOK_WEBHOOK_FORBIDDEN,
                f"webhook host {host!r} is {info[4][0]}: loopback, private and link-local targets need "
                "[hooks] webhook_allow",
                host=host,
            )
    return str(infos[0][4][0])


def sign(key_hex: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(bytes.fromhex(key_hex), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


async def post(url: str, body: bytes, key_hex: str, event_id: str, allowed: tuple[Network, ...]) -> int:
    """One signed POST; ``HOOK_DELIVERY_FAILED`` unless the answer is 2xx.
    The caller bounds it in time (the hook's timeout, ``TIMEOUT``)."""
    address = await check_target(url, allowed)
    target = httpx.URL(url)
    timestamp = str(int(time.time()))
    headers = {
        "host": target.netloc.decode("ascii"),
        "content-type": "application/json",
        SIGNATURE_HEADER: sign(key_hex, timestamp, body),
        TIMESTAMP_HEADER: timestamp,
        EVENT_HEADER: event_id,
    }
    try:  # the answer's status is all that counts: its body is never read
        async with (
            httpx.AsyncClient(timeout=None, follow_redirects=False, trust_env=False) as client,
            client.stream(
                "POST",
                target.copy_with(host=address.split("%", 1)[0]),
                content=body,
                headers=headers,
                extensions={"sni_hostname": target.host},  # TLS checks the certificate against the name
            ) as response,
        ):
            pass
    except httpx.HTTPError as exc:
        raise AspenError(ErrorCode.HOOK_DELIVERY_FAILED, f"webhook {url[:120]}: {type(exc).__name__}") from None
    if not 200 <= response.status_code < 300:
        raise AspenError(
            ErrorCode.HOOK_DELIVERY_FAILED,
            f"webhook {url[:120]} answered {response.status_code}",
            status=response.status_code,
        )
    return response.status_code
