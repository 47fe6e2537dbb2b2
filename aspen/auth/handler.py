"""The token RPCs: ``TokenCreate``, ``TokenRevoke``, ``TokenVerify``.

Registered through the ``aspen.handlers`` entry-point group
(``auth = "aspen.auth.handler:create"``). Creating never widens: every
right asked for must be one the caller's token holds, the new token expires
no later than the caller's, and it names the caller's token as an ancestor
so revoking the caller's token revokes it too.
"""

from __future__ import annotations

import secrets
from typing import Any

from aspen.auth import requests as r
from aspen.auth.tokens import (
    OPERATIONS,
    Right,
    TokenFacts,
    mint,
    read_facts,
    unverified,
)
from aspen.errors import AspenError, ErrorCode
from aspen.rpc.access import ANY, Need
from aspen.rpc.handler import RequestContext
from aspen.rpc.typed_handler import TypedHandler

MAX_RIGHTS = 64


def _iso(moment: Any) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class TokenHandler(TypedHandler):
    name = "core.auth"
    priority = 45
    handles = tuple(r.TOKEN_REQUESTS)
    catalog = r.TOKEN_REQUESTS

    @property
    def auth(self) -> Any:
        return self.node.auth

    def _principal(self, ctx: RequestContext) -> Any:
        if ctx.principal is None:
            raise AspenError(ErrorCode.UNAUTHENTICATED, "token requests need a caller's token")
        return ctx.principal

    async def token_create(self, body: r.TokenCreate, ctx: RequestContext) -> r.TokenCreateResult:
        caller = self._principal(ctx)
        if not 1 <= len(body.rights) <= MAX_RIGHTS:
            raise AspenError(ErrorCode.INVALID_ARGUMENT, f"a token has 1..{MAX_RIGHTS} rights")
        rights = []
        for spec in body.rights:
            if spec.operation not in OPERATIONS:
                raise AspenError(ErrorCode.INVALID_ARGUMENT, f"unknown operation {spec.operation!r}")
            right = Right(spec.operation, spec.resource)
            need = Need(right.operation, right.resource, right.is_prefix and right.resource != ANY)
            if not self.auth.verifier.allows(caller, need, "TokenCreate"):
                raise AspenError(
                    ErrorCode.UNAUTHORIZED,
                    f"cannot grant {right}: the caller's token does not hold it",
                    operation=right.operation,
                    resource=right.resource,
                )
            rights.append(right)
        name = body.subject or secrets.token_hex(4)
        if not isinstance(name, str) or not 0 < len(name) <= 128:
            raise AspenError(ErrorCode.INVALID_ARGUMENT, "subject must be 1..128 characters")
        subject = name if self.auth.allows(caller, "cluster:admin") else f"{caller.subject}/{name}"
        token = mint(
            self.auth.keys.root,
            subject=subject,
            rights=rights,
            ttl_seconds=body.ttl_seconds,
            audience=body.audience or self.auth.cluster_id,
            ancestors=sorted(caller.lineage),
            expires_at=caller.facts.expires_at,
        )
        facts = read_facts(unverified(token))
        return r.TokenCreateResult(
            token=token, subject=subject, expires_at=_iso(facts.expires_at), revocation_id=facts.revocation_ids[-1]
        )

    async def token_revoke(self, body: r.TokenRevoke, ctx: RequestContext) -> r.TokenRevokeResult:
        caller = self._principal(ctx)
        is_admin = self.auth.allows(caller, "cluster:admin")
        if (body.token is None) == (body.revocation_id is None):
            raise AspenError(ErrorCode.INVALID_ARGUMENT, "name either a token or a revocation_id")
        if body.token is not None:
            try:
                target = self.auth.verifier.authenticate(body.token)
            except AspenError as exc:
                if exc.code in (ErrorCode.UNAUTHENTICATED, ErrorCode.INVALID_SIGNATURE, ErrorCode.WRONG_AUDIENCE):
                    raise AspenError(
                        ErrorCode.INVALID_ARGUMENT, f"not a token of this cluster: {exc.message}"
                    ) from None
                raise  # expired or already revoked: nothing to do, say so
            revocation_id = target.facts.revocation_ids[-1]
            derived = caller.facts.revocation_ids[-1] in target.lineage
            if not (is_admin or derived):
                raise AspenError(ErrorCode.UNAUTHORIZED, "only your own token, those made from it, or cluster:admin")
        else:
            if not is_admin:
                raise AspenError(ErrorCode.UNAUTHORIZED, "revoking by id needs cluster:admin")
            revocation_id = str(body.revocation_id)
            if not revocation_id or len(revocation_id) > 256 or not all(c in "0123456789abcdef" for c in revocation_id):
                raise AspenError(ErrorCode.INVALID_ARGUMENT, "a revocation id is lowercase hex")
        await self.auth.revocations.revoke(revocation_id, caller.subject)
        return r.TokenRevokeResult(revocation_id=revocation_id)

    async def token_verify(self, body: r.TokenVerify, ctx: RequestContext) -> r.TokenVerifyResult:
        caller = self._principal(ctx)
        text = body.token or caller.text
        code = message = subject = None
        try:
            target = self.auth.verifier.authenticate(text)
            subject = target.subject
        except AspenError as exc:
            code, message = exc.code, exc.message
        try:
            facts = read_facts(unverified(text))
        except AspenError:
            facts = TokenFacts([], [])
        return r.TokenVerifyResult(
            is_valid=code is None,
            code=code,
            message=message,
            subject=subject,
            expires_at=_iso(facts.expires_at),
            blocks=facts.blocks,
            revocation_ids=facts.revocation_ids,
            cluster_id=self.auth.cluster_id,
            public_key=self.auth.keys.public.to_bytes().hex(),
        )


def create(node: Any) -> TokenHandler:
    return TokenHandler(node)
