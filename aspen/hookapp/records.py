"""The hook records of the hooks app, their checks and their keys.

A hook lives in the reserved ``__hooks:`` space, which no client writes:
``__hooks:records:{name}`` (what ``aspen hook list`` shows),
``__hooks:cursor:{name}`` (the dispatcher's cursor and counts) and, under the
secret ``__hooks:secret:{name}``, what no request ever reads: the owner's
token (re-verified at every delivery) and the webhook's signing secret.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

from aspen.errors import AspenError, ErrorCode
from aspen.hookapp.webhook import check_url
from aspen.hooks.topics import check_pattern
from aspen.jobs.model import MAX_RETRIES, RetryPolicy
from aspen.plugins.rules import REQUEST_TYPE_RE
from aspen.storage.keyspace import reserved_prefix_of

RECORDS_PREFIX = "__hooks:records:"
CURSOR_PREFIX = "__hooks:cursor:"
SECRET_PREFIX = "__hooks:secret:"
RESERVED_MARK = "__"  # system state and plugins' namespaces: no hook sees keys starting so
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,62}$")
MAX_PREFIX_BYTES = 512
MAX_TARGET_BYTES = 2048
MAX_TIMEOUT_MS = 60_000
DEFAULT_TIMEOUT_MS = 5_000
MAX_BACKOFF_MS = 60_000  # the cap of a hook's doubling backoff
JOB_ACTION_TYPES = ("shell",)  # the job types a job action submits (its argument is the command)


class HookAction(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``job``: ``target`` is ``TYPE:ARG`` (``shell:./notify.sh`` runs a shell
    job); ``call``: a request type; ``webhook``: an http(s) URL."""

    kind: Literal["job", "call", "webhook"]
    target: str


class HookRecord(msgspec.Struct, frozen=True):
    name: str
    pattern: str
    prefix: str
    action: HookAction
    mode: Literal["direct", "job"]
    owner: str  # the token subject that added it
    admin: bool  # the owner held cluster:admin at add time: non-KV topics too
    timeout_ms: int
    retries: int
    backoff_ms: int
    since: int  # events after this revision are delivered
    created_ms: int


class HookSecret(msgspec.Struct, frozen=True):
    token: str  # the owner's token, re-verified at each delivery
    signing_key: str  # hex; HMAC-SHA256 key of the webhook's signatures


class HookAdd(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    action: HookAction
    pattern: str = "hooks.kv.write_committed"
    prefix: str = ""
    mode: Literal["direct", "job"] = "direct"
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    retries: int = 3
    backoff_ms: int = 1000  # before the first retry (direct or job), doubled per retry


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise AspenError(
            ErrorCode.HOOK_NAME_INVALID,
            f"hook name {str(name)[:80]!r}: 1-63 characters of [a-z0-9_.-], starting with a letter or digit",
        )
    return name


def check_add(req: HookAdd) -> HookAdd:
    """Every check of a new hook that needs no node: one code per rule."""
    check_name(req.name)
    check_pattern(req.pattern)
    prefix = req.prefix
    if len(prefix.encode("utf-8", "surrogatepass")) > MAX_PREFIX_BYTES or "\0" in prefix:
        raise AspenError(ErrorCode.HOOK_PREFIX_DENIED, f"a hook prefix is at most {MAX_PREFIX_BYTES} bytes, no NUL")
    if prefix.startswith(RESERVED_MARK) or (prefix and reserved_prefix_of(prefix, as_prefix=True) is not None):
        raise AspenError(ErrorCode.HOOK_PREFIX_DENIED, f"{prefix!r} is reserved key space", prefix=prefix)
    if not 1 <= req.timeout_ms <= MAX_TIMEOUT_MS:
        raise AspenError(ErrorCode.HOOK_ACTION_INVALID, f"timeout_ms must be 1..{MAX_TIMEOUT_MS}")
    if not 0 <= req.retries <= MAX_RETRIES:
        raise AspenError(ErrorCode.HOOK_ACTION_INVALID, f"retries must be 0..{MAX_RETRIES}")
    target = req.action.target
    if req.action.kind == "webhook":
        check_url(target)  # its own code, HOOK_WEBHOOK_INVALID; where it may point is checked on the node
    elif not target or len(target.encode("utf-8", "surrogatepass")) > MAX_TARGET_BYTES or "\0" in target:
        raise AspenError(ErrorCode.HOOK_ACTION_INVALID, f"an action's target is 1-{MAX_TARGET_BYTES} bytes, no NUL")
    if not 0 <= req.backoff_ms <= MAX_TIMEOUT_MS:
        raise AspenError(ErrorCode.HOOK_ACTION_INVALID, f"backoff_ms must be 0..{MAX_TIMEOUT_MS}")
    if req.action.kind == "job":
        job_type, _, arg = target.partition(":")
        if job_type not in JOB_ACTION_TYPES or not arg.strip():
            raise AspenError(ErrorCode.HOOK_ACTION_INVALID, "a job action is shell:COMMAND, e.g. shell:./notify.sh")
    elif req.action.kind == "call" and not REQUEST_TYPE_RE.fullmatch(target):
        raise AspenError(ErrorCode.HOOK_ACTION_INVALID, f"{target[:80]!r} is not a request type")
    return req


def job_target(action: HookAction) -> tuple[str, str]:
    """A job action's job type and argument."""
    job_type, _, arg = action.target.partition(":")
    return job_type, arg


def retry_policy(record: HookRecord) -> RetryPolicy:
    """The hook's ``retries`` and ``backoff_ms``, doubled per retry up to a minute,
    jittered: the same for its jobs and for its direct deliveries."""
    return RetryPolicy(
        max_retries=record.retries, backoff_ms=record.backoff_ms, max_backoff_ms=max(record.backoff_ms, MAX_BACKOFF_MS)
    )


def acts_directly(record: HookRecord) -> bool:
    """A call or webhook in direct mode runs on the delivering node, which retries
    it; any other action is, or hands the event to, a job with the retries."""
    return record.mode == "direct" and record.action.kind != "job"


def decode(raw: bytes, kind: type) -> Any:
    return msgspec.json.decode(raw, type=kind)
