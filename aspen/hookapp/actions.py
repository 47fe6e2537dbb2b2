"""Running a hook's action on one event, and the ``hook.action`` job worker.

Every action acts as the hook's owner: the owner's token is verified again
(a revoked or expired one stops the hook's deliveries) and authorised for
what the action does: submitting the job, or the called request's needs.

- ``job`` (``shell:COMMAND``): submits a shell job, submitted by the owner,
  with the hook's retry policy; the event is in ``ASPEN_HOOK_EVENT`` (JSON).
- ``call``: the request, with the event as its body, dispatched as the owner.
- ``webhook``: one signed POST (:mod:`aspen.hookapp.webhook`).

In ``job`` mode a ``call`` or ``webhook`` runs inside a ``hook.action`` job,
so the job system retries it with backoff and a hook that keeps failing ends
``dead``, the job system's dead-letter view (``aspen job list --state dead``).
The job names the hook's incarnation (its record's ``create_revision``): once
that hook is removed, or removed and added again, the job acts no more and
ends ``failed`` with ``HOOK_NOT_FOUND``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec

from aspen.errors import AspenError, ErrorCode
from aspen.hookapp.records import (
    RECORDS_PREFIX,
    SECRET_PREFIX,
    HookRecord,
    HookSecret,
    decode,
    job_target,
    retry_policy,
)
from aspen.hookapp.webhook import Network, allowlist, post
from aspen.jobs.model import Job, JobFailure, JobSpec
from aspen.jobs.store import JobStore
from aspen.jobs.worker import JobContext
from aspen.rpc.access import needs_for
from aspen.rpc.handler import Request, RequestContext

ACTION_JOB_TYPE = "hook.action"
MAX_ENV_EVENT_BYTES = 64 * 1024  # an environment string's practical limit is 128 KiB


def webhook_allow(node: Any) -> tuple[Network, ...]:
    section = getattr(getattr(node, "config", None), "sections", {}).get("hooks", {})
    return allowlist(section.get("webhook_allow") if isinstance(section, dict) else None)


def owner(node: Any, secret: HookSecret) -> Any:
    """The owner's principal now; raises the token's refusal (revoked, expired)."""
    return node.auth.authenticate(secret.token)


def may_read(node: Any, principal: Any, key: str) -> bool:
    return node.auth.verifier.allows(principal, needs_for("ReadKey", {"key": key}, None)[0], "ReadKey")


async def load(kv: Any, name: str, incarnation: int) -> tuple[HookRecord, HookSecret]:
    """The hook, if it is still the one of that ``create_revision``."""
    found = await kv.batch_read([RECORDS_PREFIX + name, SECRET_PREFIX + name])
    if found[0] is None or found[1] is None or found[0].create_revision != incarnation:
        raise AspenError(ErrorCode.HOOK_NOT_FOUND, f"hook {name!r} was removed after this job was queued", name=name)
    return decode(found[0].value, HookRecord), decode(found[1].value, HookSecret)


def _job_spec(record: HookRecord, payload: dict[str, Any]) -> JobSpec:
    event = msgspec.json.encode(payload).decode()
    if len(event) > MAX_ENV_EVENT_BYTES:
        inner = {k: v for k, v in payload["event"].items() if k not in ("value", "value_b64")}
        event = msgspec.json.encode({**payload, "event": {**inner, "value_omitted": True}}).decode()
    _, command = job_target(record.action)
    env = {"ASPEN_HOOK_NAME": record.name, "ASPEN_HOOK_EVENT": event}
    return JobSpec(
        type="shell",
        payload={"command": command, "env": env},
        retry=retry_policy(record),
        timeout_ms=record.timeout_ms,
        tags=[f"hook:{record.name}"],
    )


async def submit_job(node: Any, record: HookRecord, spec: JobSpec) -> str:
    job = await JobStore(node.kv, getattr(node, "blobs", None)).submit(spec, record.owner)
    return job.id


async def act(node: Any, record: HookRecord, secret: HookSecret, payload: dict[str, Any]) -> dict[str, Any]:
    """Run the action once (no retries here), bounded by the hook's timeout."""
    principal = owner(node, secret)
    kind, target = record.action.kind, record.action.target
    async with asyncio.timeout(record.timeout_ms / 1000):
        if kind == "job":
            spec = _job_spec(record, payload)
            if not node.auth.allows(principal, "job:submit", spec.type, "JobSubmit"):
                raise AspenError(
                    ErrorCode.UNAUTHORIZED, f"the owner of {record.name!r} may not submit {spec.type} jobs"
                )
            return {"job_id": await submit_job(node, record, spec)}
        if kind == "webhook":
            body = msgspec.json.encode(payload)
            status = await post(target, body, secret.signing_key, payload["id"], webhook_allow(node))
            return {"status": status}
        handler = node.registry.snapshot().handler_for(target)
        node.auth.verifier.authorize(principal, target, needs_for(target, payload, handler))
        ctx = RequestContext(
            node=node,
            caller=principal.subject,
            principal=principal,
            token=secret.token,
            deadline=time.monotonic() + record.timeout_ms / 1000,
        )
        response = await node.registry.dispatch(Request(target, payload), ctx)
        if response.type == "Error":
            raise AspenError.from_body(response.body)
        return {"response": response.type}


async def deliver(
    node: Any, record: HookRecord, secret: HookSecret, incarnation: int, payload: dict[str, Any]
) -> dict[str, Any]:
    """Direct mode acts now; job mode hands a call or webhook to a job."""
    if record.mode == "job" and record.action.kind != "job":
        owner(node, secret)
        spec = JobSpec(
            type=ACTION_JOB_TYPE,
            payload={"hook": record.name, "incarnation": incarnation, "event": payload},
            retry=retry_policy(record),
            timeout_ms=record.timeout_ms + 1000,
            tags=[f"hook:{record.name}"],
        )
        return {"job_id": await submit_job(node, record, spec)}
    return await act(node, record, secret, payload)


class HookActionWorker:
    """Runs ``hook.action`` jobs: the hook's action, once per attempt."""

    job_types = frozenset({ACTION_JOB_TYPE})
    concurrency = 8

    def __init__(self, node: Any) -> None:
        self.node = node

    def validate(self, payload: Any) -> None:
        if not (
            isinstance(payload, dict)
            and isinstance(payload.get("hook"), str)
            and type(payload.get("incarnation")) is int
            and isinstance(payload.get("event"), dict)
        ):
            raise AspenError(
                ErrorCode.INVALID_JOB,
                'a hook.action payload is {"hook": NAME, "incarnation": REVISION, "event": {...}}',
            )

    async def execute(self, job: Job, ctx: JobContext) -> Any:
        self.validate(job.payload)
        name = job.payload["hook"]
        try:
            record, secret = await load(ctx.kv, name, job.payload["incarnation"])
            if record.owner != job.submitter:  # only the hook's owner's jobs act as its owner
                raise AspenError(ErrorCode.HOOK_NOT_FOUND, f"hook {name!r} is not this job submitter's")
            result = await act(self.node, record, secret, job.payload["event"])
        except TimeoutError:
            raise JobFailure(f"hook {name}: no answer in {job.timeout_ms} ms", code=ErrorCode.TIMEOUT) from None
        except AspenError as exc:
            permanent = exc.code in (ErrorCode.HOOK_NOT_FOUND, ErrorCode.TOKEN_REVOKED, ErrorCode.TOKEN_EXPIRED)
            ctx.log(f"hook {name}: {exc.message}")
            raise JobFailure(exc.message, code=exc.code, retryable=not permanent) from None
        ctx.log(f"hook {name}: delivered {job.payload['event'].get('id')}")
        return result


def workers(node: Any) -> HookActionWorker:
    """The ``aspen.workers`` entry point."""
    return HookActionWorker(node)
