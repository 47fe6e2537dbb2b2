"""Pull-based sync of federated resources between clusters.

Routes (GET, no token): ``/v1/federation/sync/resources``,
``…/sync/{name}/heads``, ``…/sync/{name}/objects?after=&limit=`` (≤ 1 000
hashes a page) and ``…/sync/{name}/object/{hash}`` (≤ 16 MiB). Each request
is signed by the pulling cluster's key over ``method path time audience``
(the audience is the serving cluster's key, the time within 60 s), so a
signed request is good for one cluster and one minute. The server answers
trusted clusters, and any cluster that is not blocked for a ``public``
resource.

The puller fetches the heads, then every object it lacks, checks each
object's BLAKE3 against the hash it asked for (a peer serving other bytes
is refused with ``BLOB_CORRUPT`` and nothing of that pass becomes a head),
and writes the heads last.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aspen.clock import now_ms
from aspen.errors import AspenError, ErrorCode
from aspen.federation.identity import is_key_hex, verify
from aspen.federation.resources import (
    MAX_OBJECT_BYTES,
    MAX_PAGE,
    ResourceStore,
    check_hash,
    check_name,
    check_ref,
)

SYNC_DOMAIN = b"aspen:federation-sync:v1\x00"
SKEW_MS = 60_000
MAX_SYNC_OBJECTS = 100_000
PREFIX = "/v1/federation/sync"


def signed_headers(identity: Any, audience: str, method: str, path: str) -> dict[str, str]:
    stamp = str(now_ms())
    message = f"{method} {path} {stamp} {audience}".encode()
    return {
        "x-aspen-cluster": identity.key_hex,
        "x-aspen-time": stamp,
        "x-aspen-signature": identity.sign(SYNC_DOMAIN, message),
    }


class SyncService:
    def __init__(self, fed: Any) -> None:
        self.fed = fed
        self.store = ResourceStore(fed.node.kv, fed.node.blobs)
        self.http = httpx.AsyncClient(verify=fed.verify, timeout=httpx.Timeout(30.0, connect=2.0))

    async def close(self) -> None:
        await self.http.aclose()

    # --- serving ---------------------------------------------------------------

    def authenticate(self, request: Request) -> str:
        origin = request.headers.get("x-aspen-cluster", "")
        stamp = request.headers.get("x-aspen-time", "")
        if not is_key_hex(origin) or not stamp.isdigit():
            raise AspenError(ErrorCode.UNAUTHENTICATED, "a sync request is signed: X-Aspen-Cluster, -Time, -Signature")
        if abs(now_ms() - int(stamp)) > SKEW_MS:
            raise AspenError(ErrorCode.TOKEN_EXPIRED, "the sync request's time is more than 60 s away")
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        message = f"GET {path} {stamp} {self.fed.identity.key_hex}".encode()
        if not verify(origin, SYNC_DOMAIN, message, request.headers.get("x-aspen-signature", "")):
            raise AspenError(ErrorCode.INVALID_SIGNATURE, "the sync request is not signed by the named cluster")
        if self.fed.trust.is_blocked(origin):
            raise AspenError(ErrorCode.FEDERATION_CLUSTER_BLOCKED, "this cluster does not serve yours")
        return origin

    async def allowed(self, origin: str, name: str) -> None:
        meta = await self.store.meta(name)
        if meta is None:
            raise AspenError(ErrorCode.KEY_NOT_FOUND, f"no resource {name!r} here")
        if not meta.public and self.fed.trust.level(origin) != "trusted":
            raise AspenError(ErrorCode.UNAUTHORIZED, f"resource {name!r} is shared with trusted clusters only")

    def routes(self, error: Any) -> list[Route]:
        async def guarded(request: Request, answer: Any) -> Response:
            try:
                origin = self.authenticate(request)
                name = request.path_params.get("name")
                if name is not None:
                    await self.allowed(origin, check_name(name))
                return await answer(request, name)
            except AspenError as exc:
                return error(exc)

        async def resources(request: Request, _: Any) -> Response:
            origin = request.headers["x-aspen-cluster"]
            trusted = self.fed.trust.level(origin) == "trusted"
            return JSONResponse({"resources": [m.name for m in await self.store.names() if m.public or trusted]})

        async def heads(request: Request, name: str) -> Response:
            return JSONResponse({"heads": await self.store.heads(name)})

        async def objects(request: Request, name: str) -> Response:
            after = request.query_params.get("after", "")
            if after:
                check_hash(after)
            limit = request.query_params.get("limit", str(MAX_PAGE))
            if not limit.isdigit() or not 1 <= int(limit) <= MAX_PAGE:
                raise AspenError(ErrorCode.INVALID_ARGUMENT, f"limit is 1-{MAX_PAGE}")
            found = await self.store.objects(name, after, int(limit))
            return JSONResponse({"objects": found, "more": len(found) == int(limit)})

        async def obj(request: Request, name: str) -> Response:
            data = await self.store.get_object(name, request.path_params["hash"])
            return Response(data, media_type="application/octet-stream")

        def route(path: str, answer: Any) -> Route:
            async def endpoint(request: Request) -> Response:
                return await guarded(request, answer)

            return Route(PREFIX + path, endpoint, methods=["GET"])

        return [
            route("/resources", resources),
            route("/{name}/heads", heads),
            route("/{name}/objects", objects),
            route("/{name}/object/{hash}", obj),
        ]

    # --- pulling ------------------------------------------------------------------

    async def _get(self, base: str, audience: str, path: str) -> httpx.Response:
        headers = signed_headers(self.fed.identity, audience, "GET", path)
        try:
            resp = await self.http.get(base + path, headers=headers)
        except httpx.HTTPError as exc:
            raise AspenError(ErrorCode.PEER_UNAVAILABLE, f"{base} unreachable: {exc!r}") from None
        if resp.status_code != 200:
            try:
                raise AspenError.from_body(resp.json()["body"])
            except (ValueError, KeyError, TypeError):
                raise AspenError(ErrorCode.PEER_UNAVAILABLE, f"{base}{path} answered {resp.status_code}") from None
        return resp

    async def _object(self, base: str, audience: str, path: str) -> bytes:
        """One object's bytes, refused past 16 MiB before they are all read."""
        headers = signed_headers(self.fed.identity, audience, "GET", path)
        chunks, total = [], 0
        try:
            async with self.http.stream("GET", base + path, headers=headers) as resp:
                if resp.status_code != 200:
                    raise AspenError(ErrorCode.PEER_UNAVAILABLE, f"{base}{path} answered {resp.status_code}")
                async for chunk in resp.aiter_bytes():
                    total += len(chunk)
                    if total > MAX_OBJECT_BYTES:
                        raise AspenError(ErrorCode.BLOB_TOO_LARGE, f"an object is at most {MAX_OBJECT_BYTES} bytes")
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise AspenError(ErrorCode.PEER_UNAVAILABLE, f"{base} unreachable: {exc!r}") from None
        return b"".join(chunks)

    async def pull(self, name: str, source: str) -> dict[str, Any]:
        """Pull resource ``name`` from the cluster ``source`` (key or announced name)."""
        check_name(name)
        live = [e for e in self.fed.cache.live() if source in (e.cluster_key, e.name)]
        if not live or not live[0].node_urls:
            raise AspenError(ErrorCode.FEDERATION_CLUSTER_UNKNOWN, f"no live announcement from {source!r}")
        entry = live[0]
        if self.fed.trust.level(entry.cluster_key) != "trusted":
            raise AspenError(ErrorCode.UNAUTHORIZED, f"sync pulls only from trusted clusters; {entry.name} is not")
        base, key = entry.node_urls[0].rstrip("/"), entry.cluster_key
        await self.store.ensure(name, key)
        heads = (await self._get(base, key, f"{PREFIX}/{name}/heads")).json()["heads"]
        fetched = skipped = 0
        after = ""
        started = time.monotonic()
        while True:
            query = f"?after={after}&limit={MAX_PAGE}" if after else f"?limit={MAX_PAGE}"
            page = (await self._get(base, key, f"{PREFIX}/{name}/objects{query}")).json()
            for digest in page["objects"]:
                check_hash(digest)
                if await self.store.has(name, digest):
                    skipped += 1
                    continue
                data = await self._object(base, key, f"{PREFIX}/{name}/object/{digest}")
                await self.store.add_object(name, data, expected=digest)
                fetched += 1
            if fetched + skipped > MAX_SYNC_OBJECTS:
                raise AspenError(ErrorCode.QUOTA_EXCEEDED, f"a sync moves at most {MAX_SYNC_OBJECTS} objects")
            if not page["more"] or not page["objects"]:
                break
            after = page["objects"][-1]
        await self.store.set_heads(name, {check_ref(r): check_hash(h) for r, h in heads.items()})
        return {"fetched": fetched, "skipped": skipped, "heads": heads, "seconds": time.monotonic() - started}
