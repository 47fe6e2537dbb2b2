"""The hooks app's RPCs (``HookAdd``, ``HookList``, ``HookRemove``,
``HookMetrics``, ``HookTrigger``) and the node's delivery duty.

Registered through the ``aspen.handlers`` entry point ``hooks`` (its job
worker through ``aspen.workers``). Node config, table ``[hooks]``:
``max_hooks = 1000`` (in the cluster), ``max_hooks_per_owner = 100``,
``concurrency = 8`` (direct deliveries at once), ``webhook_allow = []``
(addresses or networks a webhook may reach despite being loopback, private
or link-local). A hook is its owner's: others see ``HOOK_NOT_FOUND`` unless
they hold ``cluster:admin``.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import msgspec

from aspen.clock import now_ms
from aspen.errors import AspenError, ErrorCode
from aspen.hookapp.actions import act, owner, webhook_allow
from aspen.hookapp.delivery import DEFAULT_CONCURRENCY, HookAppService, event_id
from aspen.hookapp.records import HookAdd, HookRecord, HookSecret, check_add, check_name, job_target
from aspen.hookapp.store import MAX_HOOKS, MAX_HOOKS_PER_OWNER, HookStore
from aspen.hookapp.webhook import check_target
from aspen.hooks.topics import KV_DELETE, KV_WRITE, matches
from aspen.rpc.access import Need, needs_for
from aspen.rpc.handler import Request, RequestContext, Response


class HookName(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str


class HookList(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """No arguments: the caller's hooks (every hook, with ``cluster:admin``)."""


class HookMetrics(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str | None = None  # None: every hook the caller sees


HOOK_REQUESTS: dict[str, type[msgspec.Struct]] = {
    "HookAdd": HookAdd,
    "HookList": HookList,
    "HookRemove": HookName,
    "HookMetrics": HookMetrics,
    "HookTrigger": HookName,
}


def _body(body: Any, cls: type) -> Any:
    try:
        return msgspec.convert(body, cls)
    except msgspec.ValidationError as exc:
        raise AspenError(ErrorCode.VALIDATION_ERROR, str(exc)) from None


def _limit(section: dict[str, Any], name: str, default: int) -> int:
    value = section.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1_000_000:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"[hooks] {name} must be an integer 1..1000000")
    return value


class HookHandler:
    name = "core.hooks"
    priority = 55
    request_types = frozenset(HOOK_REQUESTS)

    def __init__(self, node: Any) -> None:
        section = node.config.sections.get("hooks", {})
        if not isinstance(section, dict):
            raise AspenError(ErrorCode.INVALID_ARGUMENT, "config table [hooks] must be a table")
        self.node = node
        self.store = HookStore(
            node.kv,
            max_hooks=_limit(section, "max_hooks", MAX_HOOKS),
            max_per_owner=_limit(section, "max_hooks_per_owner", MAX_HOOKS_PER_OWNER),
        )
        webhook_allow(node)  # a bad allowlist stops the node at start, not at the first webhook
        self.service = HookAppService(node, _limit(section, "concurrency", DEFAULT_CONCURRENCY))

    async def start(self) -> None:
        self.service.start()

    async def stop(self) -> None:
        await self.service.stop()

    async def handle(self, request: Request, ctx: RequestContext) -> Response:
        """Under the request's deadline: a core handler keeps its own, and
        adding a webhook resolves its host, triggering one runs the action."""
        method = getattr(self, "_" + request.type[4:].lower())
        try:
            async with asyncio.timeout(ctx.remaining()):
                result_type, body = await method(request.body, ctx)
        except TimeoutError:
            raise AspenError(ErrorCode.TIMEOUT, f"{request.type} did not finish before its deadline") from None
        return Response(result_type, body)

    # --- who may see what ---------------------------------------------------

    def _is_admin(self, ctx: RequestContext) -> bool:
        return self.node.auth.allows(ctx.principal, "cluster:admin")

    async def _visible(self, name: str, ctx: RequestContext) -> HookRecord:
        record = await self.store.get(check_name(name))
        if record.owner != ctx.caller and not self._is_admin(ctx):
            raise AspenError(ErrorCode.HOOK_NOT_FOUND, f"no hook {name!r}", name=name)
        return record

    def _grants(self, principal: Any, request_type: str, needs: list[Need]) -> bool:
        return all(self.node.auth.verifier.allows(principal, n, request_type) for n in needs)

    # --- requests -----------------------------------------------------------

    async def _add(self, body: Any, ctx: RequestContext) -> tuple[str, dict]:
        req = check_add(_body(body, HookAdd))
        principal = ctx.principal
        if principal is None or ctx.token is None:
            raise AspenError(ErrorCode.UNAUTHENTICATED, "a hook acts as its owner: HookAdd needs a token")
        prefix = {"prefix": req.prefix}
        if not (
            self._grants(principal, "ScanKeys", needs_for("ScanKeys", prefix, None))
            or self._grants(principal, "WatchCreate", needs_for("WatchCreate", prefix, None))
        ):
            raise AspenError(
                ErrorCode.HOOK_PREFIX_DENIED,
                f"the token may neither read nor watch {req.prefix!r}: a hook sees only what its owner may",
                prefix=req.prefix,
            )
        admin = self._is_admin(ctx)
        if not admin and not any(matches(req.pattern, t) for t in (KV_WRITE, KV_DELETE)):
            raise AspenError(
                ErrorCode.UNAUTHORIZED,
                f"{req.pattern!r} matches no KV topic: plugin, job and cluster topics need cluster:admin",
            )
        await self._check_action(req, principal)
        record = HookRecord(
            name=req.name,
            pattern=req.pattern,
            prefix=req.prefix,
            action=req.action,
            mode=req.mode,
            owner=principal.subject,
            admin=admin,
            timeout_ms=req.timeout_ms,
            retries=req.retries,
            backoff_ms=req.backoff_ms,
            since=await self.node.kv.current_revision(),
            created_ms=now_ms(),
        )
        signing_key = secrets.token_hex(32)
        await self.store.add(record, HookSecret(token=ctx.token, signing_key=signing_key))
        return "HookAddResult", {"hook": msgspec.to_builtins(record), "signing_key": signing_key}

    async def _check_action(self, req: HookAdd, principal: Any) -> None:
        kind, target = req.action.kind, req.action.target
        if kind == "webhook":
            await check_target(target, webhook_allow(self.node))
            return
        if kind == "job":
            job_type, _ = job_target(req.action)
            needs = [Need("job:submit", job_type)]
            request_type = "JobSubmit"
        else:
            handler = self.node.registry.snapshot().handler_for(target)
            try:
                needs = needs_for(target, {}, handler)
            except AspenError as exc:
                raise AspenError(
                    ErrorCode.HOOK_ACTION_INVALID, f"{target} cannot take an event: {exc.message}"
                ) from None
            request_type = target
        if not self._grants(principal, request_type, needs):
            raise AspenError(ErrorCode.UNAUTHORIZED, f"the token may not {kind} {target[:80]!r}", action=kind)

    async def _list(self, body: Any, ctx: RequestContext) -> tuple[str, dict]:
        _body(body, HookList)
        hooks = await self.store.all()
        if not self._is_admin(ctx):
            hooks = [h for h in hooks if h.owner == ctx.caller]
        return "HookListResult", {"hooks": msgspec.to_builtins(hooks)}

    async def _remove(self, body: Any, ctx: RequestContext) -> tuple[str, dict]:
        record = await self._visible(_body(body, HookName).name, ctx)
        await self.store.remove(record.name)
        return "HookRemoveResult", {"name": record.name}

    async def _metrics(self, body: Any, ctx: RequestContext) -> tuple[str, dict]:
        req = _body(body, HookMetrics)
        if req.name is not None:
            hooks = [await self._visible(req.name, ctx)]
        else:
            admin = self._is_admin(ctx)
            hooks = [h for h in await self.store.all() if admin or h.owner == ctx.caller]
        out = []
        for h in hooks:
            c = await self.store.cursor(h.name)
            try:  # why a hook may have gone quiet: its owner's token no longer verifies
                owner(self.node, await self.store.secret(h.name))
                verdict = "valid"
            except AspenError as exc:
                verdict = exc.code
            out.append(
                {
                    "name": h.name,
                    "delivered": c.delivered,
                    "failed": c.failed,
                    "dropped": c.dropped,
                    "last_error": c.last_error,
                    "last_error_ms": c.last_error_ms,
                    "revision": c.revision,
                    "owner_token": verdict,
                }
            )
        return "HookMetricsResult", {"hooks": out}

    async def _trigger(self, body: Any, ctx: RequestContext) -> tuple[str, dict]:
        """Run the action once, now, with a synthetic event; its failure is the answer."""
        record = await self._visible(_body(body, HookName).name, ctx)
        secret = await self.store.secret(record.name)
        key = record.prefix + "aspen-hook-trigger"
        topic = "hooks.trigger"
        payload = {
            "id": event_id(record.name, topic, key, 0) + f"-{secrets.token_hex(4)}",
            "hook": record.name,
            "topic": topic,
            "revision": 0,
            "event": {"key": key, "revision": 0, "synthetic": True},
        }
        try:
            result = await act(self.node, record, secret, payload)
        except TimeoutError:
            raise AspenError(ErrorCode.TIMEOUT, f"hook {record.name}: no answer in {record.timeout_ms} ms") from None
        return "HookTriggerResult", {"name": record.name, "event_id": payload["id"], "result": result}


def create(node: Any) -> HookHandler:
    return HookHandler(node)
