"""The node's auth: its keys, the token verifier, revocations and the node
credential, and the one call every entry point makes per request.

Entry points (``POST /v1/rpc``, the watch routes, the blob routes) call
:meth:`AuthService.check` with the request's token; it authenticates,
looks the request up in :mod:`aspen.rpc.access` and authorises every need
before the handler runs. Handlers that must know *who* (leases, watches,
jobs) read ``ctx.principal``; in-process calls (no HTTP) carry none and are
the node's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aspen.auth.keys import ClusterKeys, ensure_admin_token, load_cluster_keys
from aspen.auth.revocation import Revocations
from aspen.auth.tokens import PEER_OPERATION, Right, mint
from aspen.auth.verifier import Principal, TokenVerifier
from aspen.errors import AspenError, ErrorCode
from aspen.rpc.access import ANY, ROUTES, Need, needs_for
from aspen.storage.protocol import KeyValueStore

PEER_NEED = Need(PEER_OPERATION, ANY)
NODE_SUBJECT_PREFIX = "node:"


class AuthService:
    def __init__(self, keys: ClusterKeys, kv: KeyValueStore, node_id: str, admin_token_path: Path) -> None:
        self.keys = keys
        self.revocations = Revocations(kv, self._forget)
        self.verifier = TokenVerifier(keys.public, keys.cluster_id, self.revocations.any_revoked)
        self.admin_token_path = admin_token_path
        # What this node shows its peers (blob pushes and fetches): only cluster members can mint it.
        self.node_token = mint(
            keys.root,
            subject=NODE_SUBJECT_PREFIX + node_id,
            rights=[Right(PEER_OPERATION, ANY), Right("blob:read", ANY), Right("blob:write", ANY)],
            audience=keys.cluster_id,
        )

    @classmethod
    async def open(cls, data_dir: Path | str, kv: KeyValueStore, node_id: str, *, shared: bool) -> AuthService:
        data_dir = Path(data_dir)
        keys = await load_cluster_keys(data_dir, kv, shared=shared)
        service = cls(keys, kv, node_id, ensure_admin_token(data_dir, keys))
        await service.revocations.start()
        return service

    async def close(self) -> None:
        await self.revocations.stop()

    def _forget(self) -> None:
        self.verifier.forget()

    @property
    def cluster_id(self) -> str:
        return self.keys.cluster_id

    def authenticate(self, token: str | None) -> Principal:
        return self.verifier.authenticate(token)

    def check(self, token: str | None, request_type: str, body: Mapping[str, Any], handler: Any = None) -> Principal:
        """Authenticate and authorise one request; raises the refusal's code."""
        principal = self.verifier.authenticate(token)
        self.verifier.authorize(principal, request_type, needs_for(request_type, body, handler))
        return principal

    def check_route(self, token: str | None, route: str, body: Mapping[str, Any]) -> Principal:
        principal = self.verifier.authenticate(token)
        self.verifier.authorize(principal, route, ROUTES[route](body))
        return principal

    def check_peer(self, token: str | None) -> Principal:
        """Node-to-node routes: a credential only cluster members hold."""
        principal = self.verifier.authenticate(token)
        self.verifier.authorize(principal, "Peer", [PEER_NEED])
        return principal

    def allows(self, principal: Principal | None, operation: str, resource: str = ANY, request_type: str = "") -> bool:
        """For handlers' own checks (``job:admin``, ``cluster:admin``): an
        in-process call (no principal) is the node's own."""
        if principal is None:
            return True
        return self.verifier.allows(principal, Need(operation, resource), request_type)


def bearer(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer …`` header, if any."""
    value = headers.get("authorization")
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AspenError(ErrorCode.UNAUTHENTICATED, "the Authorization header must be 'Bearer <token>'")
    return token.strip()


HTTP_STATUS = {
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.INVALID_SIGNATURE: 401,
    ErrorCode.TOKEN_EXPIRED: 401,
    ErrorCode.TOKEN_REVOKED: 401,
    ErrorCode.WRONG_AUDIENCE: 401,
    ErrorCode.UNAUTHORIZED: 403,
}
