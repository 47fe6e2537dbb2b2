"""Capability tokens: Biscuit (Ed25519, offline attenuation) with the
vocabulary the node understands. Nothing here talks to a node: minting needs
the cluster's root key, attenuating and inspecting need nothing but the token.

Authority block (minted by a node)::

    subject("alice");                       # the caller's identity
    right("kv:read", "app/");               # operation, resource
    ancestor("<revocation id>");            # tokens it was created from
    check if time($t), $t < 2026-12-01T10:00:00Z;
    check if audience("<cluster id>");

An attenuation block adds only checks (Biscuit makes that the only thing it
can do): a union of the rights it keeps, an expiry, a set of request types.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import biscuit_auth as bz

from aspen.errors import AspenError, ErrorCode

# Operations whose resource is a key prefix (a right covers every key under it);
# every other operation names its resource exactly (a job type, plugin name, hash) or "*".
PREFIX_OPERATIONS = frozenset({"kv:read", "kv:write", "kv:delete", "kv:watch", "coord"})
OPERATIONS = (
    *sorted(PREFIX_OPERATIONS),
    "lease",
    "blob:read",
    "blob:write",
    "blob:admin",
    "job:submit",
    "job:read",
    "job:admin",
    "plugin:call",
    "plugin:admin",
    "hook",
    "cluster:admin",
    "token:delegate",
)
PEER_OPERATION = "cluster:peer"  # node-to-node routes; only node credentials hold it
ANY = "*"
# Job types that "*" never implies: a token must name them.
EXPLICIT_ONLY = {"job:submit": frozenset({"shell", "nix"})}
MAX_TOKEN_CHARS = 16 * 1024
MAX_TTL_SECONDS = 10 * 365 * 86400

_EXPIRY = re.compile(r"check if time\(\$\w+\), \$\w+ < (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")
_AUDIENCE = re.compile(r'check if audience\("((?:[^"\\]|\\.)*)"\)')


@dataclass(frozen=True, slots=True)
class Right:
    operation: str
    resource: str

    def __post_init__(self) -> None:
        if self.operation not in OPERATIONS and self.operation != PEER_OPERATION:
            raise AspenError(
                ErrorCode.INVALID_ARGUMENT,
                f"unknown operation {self.operation!r}; known: {', '.join(OPERATIONS)}",
                operation=self.operation,
            )
        if not isinstance(self.resource, str) or len(self.resource) > 1024:
            raise AspenError(ErrorCode.INVALID_ARGUMENT, "a resource is a string of at most 1024 characters")

    @property
    def is_prefix(self) -> bool:
        return self.operation in PREFIX_OPERATIONS

    def __str__(self) -> str:
        return f"{self.operation} {self.resource}"


def admin_rights() -> list[Right]:
    """Everything a cluster's first token holds (shell and nix named explicitly)."""
    rights = [Right(op, ANY) for op in OPERATIONS]
    rights += [Right("job:submit", t) for t in sorted(EXPLICIT_ONLY["job:submit"])]
    return rights


def _utc(seconds_from_now: float) -> dt.datetime:
    if not 0 < seconds_from_now <= MAX_TTL_SECONDS:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"ttl must be 1..{MAX_TTL_SECONDS} seconds")
    moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds_from_now)
    return moment.replace(microsecond=0)


def mint(
    root: bz.PrivateKey,
    *,
    subject: str,
    rights: Iterable[Right],
    ttl_seconds: float | None = None,
    audience: str | None = None,
    ancestors: Iterable[str] = (),
    expires_at: dt.datetime | None = None,
) -> str:
    """A new token signed by the cluster's root key (base64url)."""
    builder = bz.BiscuitBuilder("subject({s});", {"s": subject})
    for r in rights:
        builder.add_fact(bz.Fact("right({op}, {res})", {"op": r.operation, "res": r.resource}))
    for a in ancestors:
        builder.add_fact(bz.Fact("ancestor({a})", {"a": a}))
    if ttl_seconds is not None:
        moment = _utc(ttl_seconds)
        expires_at = moment if expires_at is None else min(expires_at, moment)
    if expires_at is not None:
        builder.add_check(bz.Check("check if time($t), $t < {e}", {"e": expires_at}))
    if audience is not None:
        builder.add_check(bz.Check("check if audience({a})", {"a": audience}))
    return builder.build(root).to_base64()


def _restriction(rights: list[Right]) -> str:
    """One check whose alternatives are the kept rights: a request passes only
    when it matches one of them."""
    bodies = []
    for r in rights:
        op = _quote(r.operation)
        if r.resource == ANY:
            bodies.append(f"operation({op})")
        elif r.is_prefix:
            bodies.append(f"operation({op}), resource($r), $r.starts_with({_quote(r.resource)})")
        else:
            bodies.append(f"operation({op}), resource({_quote(r.resource)})")
    return "check if " + " or ".join(bodies)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def attenuate(
    token: str,
    public_key: bz.PublicKey,
    *,
    rights: list[Right] | None = None,
    ttl_seconds: float | None = None,
    request_types: list[str] | None = None,
) -> str:
    """Append a block that can only narrow: keep ``rights`` (None: all),
    expire after ``ttl_seconds``, allow only ``request_types``. Offline but
    for the cluster's public key, which the library needs to re-serialise
    the token (it is no secret: ``TokenVerify`` answers it)."""
    if rights is None and ttl_seconds is None and request_types is None:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, "a delegation must restrict something (rights, ttl or types)")
    unverified(token)
    try:
        parsed = bz.Biscuit.from_base64(token.strip(), public_key)
    except (bz.BiscuitValidationError, bz.BiscuitSerializationError, ValueError):
        raise AspenError(ErrorCode.INVALID_SIGNATURE, "the token is not signed by the given cluster key") from None
    block = bz.BlockBuilder()
    if rights is not None:
        if not rights:
            raise AspenError(ErrorCode.INVALID_ARGUMENT, "a delegation keeps at least one right")
        block.add_code(_restriction(rights) + ";")
    if ttl_seconds is not None:
        block.add_check(bz.Check("check if time($t), $t < {e}", {"e": _utc(ttl_seconds)}))
    if request_types is not None:
        if not request_types or not all(isinstance(t, str) and t for t in request_types):
            raise AspenError(ErrorCode.INVALID_ARGUMENT, "request types must be non-empty names")
        block.add_check(bz.Check("check if request_type($t), {ts}.contains($t)", {"ts": set(request_types)}))
    return parsed.append(block).to_base64()


def unverified(token: str) -> bz.UnverifiedBiscuit:
    """Parse without checking the signature; ``UNAUTHENTICATED`` when unreadable."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise AspenError(ErrorCode.UNAUTHENTICATED, f"a token is 1..{MAX_TOKEN_CHARS} characters of base64url")
    try:
        return bz.UnverifiedBiscuit.from_base64(token.strip())
    except (bz.BiscuitValidationError, bz.BiscuitSerializationError, ValueError):
        raise AspenError(ErrorCode.UNAUTHENTICATED, "the token is not a readable Biscuit") from None


@dataclass(frozen=True, slots=True)
class TokenFacts:
    """What a token says about itself, read from its blocks' source. Used to
    pick the right error code and for ``aspen token inspect``; the Datalog
    authorizer alone decides what a token may do."""

    blocks: list[str]
    revocation_ids: list[str]
    expires_at: dt.datetime | None = None  # the earliest expiry of any block
    audiences: frozenset[str] = field(default_factory=frozenset)


def read_facts(token: bz.Biscuit | bz.UnverifiedBiscuit) -> TokenFacts:
    blocks = [token.block_source(i) for i in range(token.block_count())]
    expiries = [dt.datetime.fromisoformat(m) for b in blocks for m in _EXPIRY.findall(b)]
    audiences = frozenset(a.replace('\\"', '"').replace("\\\\", "\\") for b in blocks for a in _AUDIENCE.findall(b))
    return TokenFacts(blocks, list(token.revocation_ids), min(expiries) if expiries else None, audiences)


def parse_duration(text: str) -> int:
    """``90``, ``90s``, ``10m``, ``1h``, ``7d`` → seconds."""
    m = re.fullmatch(r"\s*(\d{1,9})\s*([smhd]?)\s*", text or "")
    if not m:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"a duration is like 90s, 10m, 1h or 7d, got {text!r}")
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
