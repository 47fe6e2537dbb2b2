"""TLS and user/password auth for the channels to etcd.

etcd serves gRPC over TLS (optionally requiring a client certificate) and has
its own users: ``Auth.Authenticate`` trades a user and password for a token
that every later call carries as ``token`` metadata. etcd drops a token that
goes unused for a while (``--auth-token-ttl``, 5 min by default), so a call
refused with "invalid auth token" fetches a fresh one and is sent again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from aetcd import rpc

from aspen.errors import AspenError, ErrorCode

_AUTHENTICATE = "/etcdserverpb.Auth/Authenticate"
_AUTH_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class EtcdSecurity:
    """PEM bytes for TLS (``ca`` alone: server-verified TLS; ``cert``+``key``:
    a client certificate too) and etcd's user/password."""

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None
    user: str | None = None
    password: str | None = None

    @classmethod
    def from_files(
        cls,
        *,
        ca: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        user: str | None = None,
        password: str | None = None,
    ) -> EtcdSecurity:
        def read(path: str | None) -> bytes | None:
            try:
                return None if path is None else Path(path).read_bytes()
            except OSError as exc:
                raise AspenError(ErrorCode.INVALID_ARGUMENT, f"cannot read etcd TLS file {path}: {exc}") from None

        return cls(ca=read(ca), cert=read(cert), key=read(key), user=user, password=password)

    @property
    def tls(self) -> bool:
        return self.ca is not None or self.cert is not None


def open_channel(target: str, security: EtcdSecurity | None, options: list) -> grpc.aio.Channel:
    """A channel to one member, with TLS and auth when ``security`` asks for them."""
    auth = _TokenAuth(security.user, security.password or "") if security and security.user else None
    interceptors = [auth.unary, auth.stream] if auth else None
    if security and security.tls:
        creds = grpc.ssl_channel_credentials(
            root_certificates=security.ca, private_key=security.key, certificate_chain=security.cert
        )
        channel = grpc.aio.secure_channel(target, creds, options=options, interceptors=interceptors)
    else:
        channel = grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    if auth:
        auth.stub = rpc.AuthStub(channel)
    return channel


def _is_stale_token(exc: grpc.aio.AioRpcError) -> bool:
    return "invalid auth token" in (exc.details() or "").lower()


class _TokenAuth:
    """Adds etcd's auth token to every call (two interceptors share one token)."""

    def __init__(self, user: str, password: str) -> None:
        self.user, self.password = user, password
        self.token: str | None = None
        self.stub: Any = None
        self._lock = asyncio.Lock()
        self.unary = _Unary(self)
        self.stream = _Stream(self)

    async def current(self, stale: str | None = None) -> str:
        async with self._lock:
            if self.token is None or self.token == stale:
                resp = await self.stub.Authenticate(
                    rpc.AuthenticateRequest(name=self.user, password=self.password), timeout=_AUTH_TIMEOUT
                )
                self.token = resp.token
            return self.token

    async def details(self, details: grpc.aio.ClientCallDetails, stale: str | None = None):
        token = await self.current(stale)
        metadata = grpc.aio.Metadata.from_tuple((*tuple(details.metadata or ()), ("token", token)))
        return details._replace(metadata=metadata), token


def _method(details: grpc.aio.ClientCallDetails) -> str:
    m = details.method
    return m.decode() if isinstance(m, bytes) else m


class _Unary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, auth: _TokenAuth) -> None:
        self.auth = auth

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        if _method(client_call_details) == _AUTHENTICATE:
            return await continuation(client_call_details, request)
        details, token = await self.auth.details(client_call_details)
        call = await continuation(details, request)
        try:
            return await call
        except grpc.aio.AioRpcError as exc:
            if not _is_stale_token(exc):
                raise
        details, _ = await self.auth.details(client_call_details, stale=token)
        return await (await continuation(details, request))


class _Stream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, auth: _TokenAuth) -> None:
        self.auth = auth

    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        details, _ = await self.auth.details(client_call_details)
        return await continuation(details, request_iterator)
