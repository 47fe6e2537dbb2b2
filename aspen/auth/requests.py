"""Request and response bodies of the token RPCs, shared by the node's
handler, the client and the CLI."""

from __future__ import annotations

from aspen.rpc.catalog import Body

DEFAULT_TOKEN_TTL = 86400


class RightSpec(Body):
    operation: str
    resource: str


class TokenCreate(Body):
    """Mint a token with ``rights``, each of which the caller's token must
    hold; it expires no later than the caller's and is revoked with it."""

    rights: list[RightSpec]
    subject: str | None = None  # cluster:admin may name anyone; others get "{caller}/{subject}"
    ttl_seconds: int = DEFAULT_TOKEN_TTL
    audience: str | None = None  # None: this cluster


class TokenCreateResult(Body):
    token: str
    subject: str
    expires_at: str | None
    revocation_id: str


class TokenRevoke(Body):
    """Revoke ``token`` and everything made from it: the caller's own token
    and those derived from it, or any with ``cluster:admin`` (which may also
    name a bare ``revocation_id``)."""

    token: str | None = None
    revocation_id: str | None = None


class TokenRevokeResult(Body):
    revocation_id: str


class TokenVerify(Body):
    token: str | None = None  # None: the caller's own


class TokenVerifyResult(Body):
    is_valid: bool
    code: str | None
    message: str | None
    subject: str | None
    expires_at: str | None
    blocks: list[str]
    revocation_ids: list[str]
    cluster_id: str
    public_key: str  # hex Ed25519: what offline attenuation needs


TOKEN_REQUESTS: dict[str, tuple[type[Body], str, type[Body]]] = {
    "TokenCreate": (TokenCreate, "TokenCreateResult", TokenCreateResult),
    "TokenRevoke": (TokenRevoke, "TokenRevokeResult", TokenRevokeResult),
    "TokenVerify": (TokenVerify, "TokenVerifyResult", TokenVerifyResult),
}
