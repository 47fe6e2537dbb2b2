"""Forwarding a request for an app this cluster lacks to a trusted cluster
that announces it, and serving such requests from other clusters.

Sending (``ProxyService.forward``, the registry's forwarder): the caller
needs ``plugin:call`` on the app here. Targets are live announcements of
the app (its version constraint honoured), trusted clusters first, public
ones only with ``[federation.proxy] public = true``, blocked ones never; at
most ``max_targets``, all within ``timeout``. The caller's token never
leaves: each attempt carries a Biscuit rooted in *this* cluster's key, for
the target cluster only (audience), this request type and app only, naming
the caller, valid 30 s and never past the caller's token (reused for half
that, per caller token: :meth:`ProxyService._token`). A target that is unreachable or
answers ``CAPABILITY_UNAVAILABLE`` is skipped; when none answers, the
request fails with ``CAPABILITY_UNAVAILABLE`` and up to 8 hints.

Receiving (``POST /v1/federation/proxy``, :meth:`ProxyService.serve`): the
token must verify under the sending cluster's key, which must be trusted
here (or public with ``accept_public``; never blocked); its checks must
hold (type, app, audience, expiry); this cluster's own trust entry decides
which apps and callers it may use. The request then runs under a token
this cluster mints for ``federation:{key}/{caller}`` holding only
``plugin:call`` on the app, so every local rule applies as to any caller.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
from collections import OrderedDict
from typing import Any

import aiohttp
import biscuit_auth as bz
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from prometheus_client import Counter

from aspen.auth.tokens import Right, mint, read_facts
from aspen.auth.verifier import MAX_DATALOG_TIME, within_budget
from aspen.errors import AspenError, ErrorCode, quota_exceeded
from aspen.rpc.access import needs_for
from aspen.rpc.catalog import CORE_REQUEST_TYPES
from aspen.rpc.envelope import MSGPACK, Envelope, decode_response, encode_request
from aspen.rpc.handler import Request, RequestContext, Response

PROXY_PATH = "/v1/federation/proxy"
CLUSTER_HEADER = "x-aspen-cluster"
TOKEN_TTL = 30
MAX_HINTS = 8
MAX_IN_FLIGHT_PER_CLUSTER = 256
LOCAL_TOKEN_TTL = 60
MAX_CACHED = 4096
MAX_RESPONSE_BYTES = 16 << 20  # a peer's answer is read into memory: a hostile one must not fill it
_CHECK = "allow if true;"


def split_app(app: str) -> tuple[str, SpecifierSet | None]:
    """``echo`` or ``echo@>=1.2,<2``: the app id and its version constraint."""
    app_id, sep, spec = app.partition("@")
    if not sep:
        return app_id, None
    try:
        return app_id, SpecifierSet(spec)
    except InvalidSpecifier:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"{spec!r} is not a version constraint (e.g. >=1.2,<2)") from None


def satisfies(version: str, spec: SpecifierSet | None) -> bool:
    if spec is None:
        return True
    try:
        return Version(version) in spec
    except InvalidVersion:
        return False


class ProxyService:
    def __init__(self, fed: Any) -> None:
        self.fed = fed
        self.node = fed.node
        self.config = fed.config.proxy
        # aiohttp, not httpx: its C parser makes the hop several times cheaper (bench_proxy). One pool
        # of keep-alive connections; each attempt is bounded by its own deadline. No environment
        # proxies or netrc (a thread hop each per request, and no credentials of this host go to
        # peers) and no cookies kept from them.
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=fed.verify, limit=0, limit_per_host=MAX_IN_FLIGHT_PER_CLUSTER),
            timeout=aiohttp.ClientTimeout(connect=2.0), cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
        )  # fmt: skip
        self.calls = Counter(
            "aspen_federation_proxied", "Requests forwarded to other clusters, by target and outcome",
            ["target", "outcome"], registry=self.node.metrics.registry,
        )  # fmt: skip
        self._sent_tokens: OrderedDict[tuple, tuple[float, str]] = OrderedDict()
        self._verified: OrderedDict[tuple, tuple[float, str]] = OrderedDict()  # -> (expires epoch, caller)
        self._local_tokens: OrderedDict[tuple, tuple[float, str]] = OrderedDict()
        self._in_flight: dict[str, int] = {}

    async def close(self) -> None:
        await self.http.close()

    # --- sending ------------------------------------------------------------

    def _targets(self, request: Request) -> tuple[str | None, list[Any], list[dict]]:
        """The app, the clusters to try in order, and hints for the refusal."""
        spec = None
        app_id = None
        if request.app:
            app_id, spec = split_app(request.app)
        live = self.fed.cache.live()
        candidates = []
        for e in live:
            level = self.fed.trust.level(e.cluster_key)
            if level == "blocked":
                continue
            for a in e.apps:
                matches = a.app_id == app_id if app_id else request.type in a.request_types
                if matches and satisfies(a.version, spec):
                    candidates.append((level != "trusted", e, a))
                    break
        candidates.sort(key=lambda c: (c[0], c[1].name))
        if app_id is None and candidates:
            app_id = candidates[0][2].app_id
        hints = [{"cluster_key": e.cluster_key, "name": e.name, "app_version": a.version} for _, e, a in candidates]
        usable = [e for public, e, _ in candidates if not public or self.config.public]
        return app_id, usable[: self.config.max_targets], hints[:MAX_HINTS]

    def _token(self, target_key: str, ctx: RequestContext, request: Request, app_id: str) -> str:
        """The proxy token for this caller's token, request type, app and target.

        Minting costs more than the call, so one is reused while more than
        half its 30 s are left, keyed by the caller's *token* (not subject; by
        its last block's revocation id, unique to it and 128 characters),
        and it never outlives that token: its expiry is capped at the
        caller's, and reuse stops there. Revocation needs nothing here: the
        caller's token is authenticated on this cluster before every forward
        (the verifier drops its cache on each revocation), so a revoked one
        is refused before a cached proxy token is looked at, as directly.
        At most ``MAX_CACHED`` entries, the oldest dropped first."""
        principal = ctx.principal
        hops = ctx.proxy_hops + 1
        key = (target_key, principal.facts.revocation_ids[-1] if principal else None, request.type, app_id, hops)
        now = time.time()
        hit = self._sent_tokens.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        expires = int(min(now + TOKEN_TTL, principal.expires_epoch if principal else math.inf))
        token = self._mint(target_key, ctx.caller or "node", request, app_id, hops, expires)
        self._sent_tokens.pop(key, None)
        self._sent_tokens[key] = (min(now + TOKEN_TTL / 2, expires), token)
        while len(self._sent_tokens) > MAX_CACHED:
            self._sent_tokens.popitem(last=False)
        return token

    def _mint(self, target_key: str, caller: str, request: Request, app_id: str, hops: int, expires: int) -> str:
        builder = bz.BiscuitBuilder(
            "cluster({k}); caller({c}); hops({h});", {"k": self.fed.identity.key_hex, "c": caller, "h": hops}
        )
        builder.add_check(bz.Check("check if request_type({t})", {"t": request.type}))
        builder.add_check(bz.Check("check if app({a})", {"a": app_id}))
        builder.add_check(bz.Check("check if audience({a})", {"a": target_key}))
        builder.add_check(bz.Check("check if time($t), $t < {e}", {"e": dt.datetime.fromtimestamp(expires, dt.UTC)}))
        return builder.build(self.fed.identity.biscuit_root).to_base64()

    async def forward(self, request: Request, ctx: RequestContext) -> Response | None:
        if request.type in CORE_REQUEST_TYPES and request.app is None:
            return None
        app_id, targets, hints = self._targets(request)
        if app_id is None:
            return None  # nobody announces it: the registry's own answer
        auth = self.node.auth
        if not auth.allows(ctx.principal, "plugin:call", app_id, request.type):
            raise AspenError(
                ErrorCode.UNAUTHORIZED,
                f"{request.type} through another cluster needs plugin:call on {app_id!r}, which the token does not grant",
                operation="plugin:call",
                resource=app_id,
            )
        deadline = min(ctx.deadline, time.monotonic() + self.config.timeout)
        for target in targets:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            label = f"{target.name}:{target.cluster_key[:8]}"
            env = Envelope(
                type=request.type, body=request.body, app=request.app,
                token=self._token(target.cluster_key, ctx, request, app_id),
                proxy_hops=ctx.proxy_hops + 1, timeout_ms=int(left * 1000),
            )  # fmt: skip
            try:
                async with asyncio.timeout(left):
                    resp = await self._post(target, env)
            except TooLarge:
                self.calls.labels(label, "oversized").inc()
                raise
            except (TimeoutError, OSError, aiohttp.ClientError, AspenError):
                self.calls.labels(label, "unreachable").inc()
                continue
            code = resp.body.get("code") if resp.type == "Error" else None
            if code == ErrorCode.CAPABILITY_UNAVAILABLE:
                self.calls.labels(label, "unavailable").inc()
                continue
            self.calls.labels(label, "ok" if code is None else str(code)).inc()
            return resp
        raise AspenError(
            ErrorCode.CAPABILITY_UNAVAILABLE,
            f"the '{app_id}' app is not loaded on this cluster and no trusted cluster answered for it",
            required_app=app_id,
            hints=hints,
        )

    async def _post(self, target: Any, env: Envelope) -> Response:
        url = target.node_urls[0].rstrip("/") + PROXY_PATH
        headers = {"content-type": MSGPACK, CLUSTER_HEADER: self.fed.identity.key_hex}
        async with self.http.post(url, data=encode_request(env, True), headers=headers) as resp:
            raw = await read_bounded(resp, target.name)
            wire = decode_response(raw, "msgpack" in resp.headers.get("content-type", ""))
        return Response(wire.type, wire.body)

    # --- receiving ----------------------------------------------------------

    def _authenticate(self, origin: str, env: Envelope, app_id: str) -> str:
        """The caller the origin cluster vouches for; raises the refusal."""
        fed = self.fed
        level = fed.trust.level(origin)
        if level == "blocked":
            raise AspenError(ErrorCode.FEDERATION_CLUSTER_BLOCKED, "this cluster does not serve yours")
        if level != "trusted" and not fed.config.accept_public:
            raise AspenError(ErrorCode.UNAUTHORIZED, "this cluster does not trust yours", operation="federation")
        if not env.token:
            raise AspenError(ErrorCode.UNAUTHENTICATED, "a proxied request carries its cluster's proxy token")
        key = (origin, env.token, env.type, app_id)
        hit = self._verified.get(key)
        if hit is not None and hit[0] > time.time():
            caller = hit[1]
        else:
            caller, expires = self._verify(origin, env, app_id)
            self._verified[key] = (expires, caller)
            if len(self._verified) > MAX_CACHED:
                self._verified.popitem(last=False)
        entry = fed.trust.entry(origin)  # checked on every request: a changed entry holds at once
        if entry is not None and entry.level == "trusted":
            if "*" not in entry.apps and app_id not in entry.apps:
                raise AspenError(ErrorCode.UNAUTHORIZED, f"your cluster may not call {app_id!r} here", resource=app_id)
            if "*" not in entry.callers and caller not in entry.callers:
                raise AspenError(ErrorCode.UNAUTHORIZED, f"caller {caller!r} of your cluster may not call here")
        return caller

    def _verify(self, origin: str, env: Envelope, app_id: str) -> tuple[str, float]:
        """The token's signature and checks (≈0.3 ms); the caller and when the token expires."""
        fed = self.fed
        try:
            key = bz.PublicKey.from_bytes(bytes.fromhex(origin), bz.Algorithm.Ed25519)
            token = bz.Biscuit.from_base64(env.token, key)
        except (ValueError, bz.BiscuitValidationError, bz.BiscuitSerializationError):
            raise AspenError(
                ErrorCode.INVALID_SIGNATURE, "the proxy token is not signed by the named cluster"
            ) from None
        facts = bz.AuthorizerBuilder(
            "request_type({t}); app({a}); audience({k}); time({now}); " + _CHECK,
            {"t": env.type, "a": app_id, "k": fed.identity.key_hex, "now": dt.datetime.now(dt.UTC)},
        )
        limits = facts.limits()
        limits.max_time = MAX_DATALOG_TIME  # as the node's own verifier: a busy machine must not deny valid calls
        facts.set_limits(limits)
        try:
            authorizer = within_budget(lambda: facts.build(token))
            within_budget(authorizer.authorize)
            callers = [str(f.terms[0]) for f in within_budget(lambda: authorizer.query(bz.Rule("c($c) <- caller($c)")))]
            clusters = [
                str(f.terms[0]) for f in within_budget(lambda: authorizer.query(bz.Rule("k($k) <- cluster($k)")))
            ]
        except bz.AuthorizationError:
            raise AspenError(
                ErrorCode.UNAUTHORIZED, "the proxy token does not cover this request (type, app, audience or expiry)"
            ) from None
        if clusters != [origin] or len(callers) != 1:
            raise AspenError(ErrorCode.UNAUTHORIZED, "the proxy token names another cluster or no single caller")
        expires = read_facts(token).expires_at
        if expires is None:
            raise AspenError(ErrorCode.UNAUTHORIZED, "a proxy token must expire")
        return callers[0], expires.timestamp()

    def _principal(self, origin: str, caller: str, app_id: str, plugin: str | None) -> tuple[str, Any]:
        """A token of this cluster for the remote caller: plugin:call on the app only. Minted
        once per 30 s, but authenticated on every request (a cache hit in the verifier), so
        revoking it here holds at once, as for any token."""
        auth = self.node.auth
        key = (origin, caller, app_id, plugin)
        hit = self._local_tokens.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1], auth.authenticate(hit[1])
        rights = [Right("plugin:call", app_id)] + (
            [Right("plugin:call", plugin)] if plugin and plugin != app_id else []
        )
        subject = f"federation:{origin[:16]}/{caller}"
        token = mint(
            auth.keys.root, subject=subject, rights=rights, ttl_seconds=LOCAL_TOKEN_TTL, audience=auth.cluster_id
        )
        principal = auth.authenticate(token)
        self._local_tokens[key] = (time.monotonic() + LOCAL_TOKEN_TTL / 2, token)
        if len(self._local_tokens) > 1024:
            self._local_tokens.popitem(last=False)
        return token, principal

    async def serve(self, origin: str, env: Envelope) -> Response:
        if env.type in CORE_REQUEST_TYPES:
            raise AspenError(
                ErrorCode.UNAUTHORIZED, "only app requests travel between clusters", operation="federation"
            )
        snap = self.node.registry.snapshot()
        handler = snap.handler_for(env.type)
        app_id = getattr(handler, "app_id", None) or (
            split_app(env.app)[0] if env.app else snap.app_types.get(env.type)
        )
        if app_id is None:
            raise AspenError(ErrorCode.CAPABILITY_UNAVAILABLE, f"no app here answers {env.type}", hints=[])
        caller = self._authenticate(origin, env, app_id)
        busy = self._in_flight.get(origin, 0)
        if busy >= MAX_IN_FLIGHT_PER_CLUSTER:
            raise quota_exceeded("proxied_in_flight_per_cluster", MAX_IN_FLIGHT_PER_CLUSTER, busy)
        token, principal = self._principal(
            origin, caller, app_id, getattr(handler, "plugin_name", None) or getattr(handler, "name", None)
        )
        self.node.auth.verifier.authorize(principal, env.type, needs_for(env.type, env.body, handler))
        timeout = min(self.node.config.max_request_seconds, max(env.timeout_ms or 0, 0) / 1000 or self.config.timeout)
        ctx = RequestContext(
            node=self.node, caller=principal.subject, principal=principal, token=token,
            proxy_hops=env.proxy_hops, deadline=time.monotonic() + timeout,
        )  # fmt: skip
        self._in_flight[origin] = busy + 1
        try:
            return await self.node.registry.dispatch(Request(env.type, env.body, env.app), ctx)
        finally:
            self._in_flight[origin] -= 1
            if not self._in_flight[origin]:
                del self._in_flight[origin]


class TooLarge(AspenError):
    """A peer's answer over the bound: the caller gets MESSAGE_TOO_LARGE."""


async def read_bounded(resp: aiohttp.ClientResponse, peer: str) -> bytes:
    """The whole answer, refused past ``MAX_RESPONSE_BYTES`` (declared or sent);
    not retried elsewhere: the peer did run the request."""
    declared = resp.content_length
    if declared is None or declared <= MAX_RESPONSE_BYTES:
        chunks, size = [], 0
        async for chunk in resp.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                break
            chunks.append(chunk)
        else:
            return b"".join(chunks)
    raise TooLarge(
        ErrorCode.MESSAGE_TOO_LARGE,
        f"cluster {peer} answered with more than {MAX_RESPONSE_BYTES} bytes",
        max=MAX_RESPONSE_BYTES,
    )
