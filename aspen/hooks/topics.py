"""Hook topics and subscription patterns.

Every topic is derived from one committed KV change, so one revision cursor
covers them all:

| change | topic | event |
|---|---|---|
| a user key put / deleted | ``hooks.kv.write_committed`` / ``hooks.kv.delete_committed`` | ``key``, ``revision``, ``version``, ``value`` (only for a subscriber that may read it) |
| ``__plugins:manifests:{name}`` created / changed / deleted | ``hooks.plugin.installed`` / ``.updated`` / ``.removed`` | ``name``, ``version``, ``enabled`` |
| ``__plugins:status:{name}:{node}`` | ``hooks.plugin.state_changed`` | ``name``, ``node_id``, ``state`` |
| ``__jobs:state:{state}:{id}`` put (a job's state changed) | ``hooks.job.{state}`` | ``job_id``, ``job_type``, ``state`` |
| ``__cluster:nodes:{id}`` created / deleted | ``hooks.cluster.node_joined`` / ``.node_left`` | ``node_id`` |

Derived topics carry only that summary, never a reserved value; any other
reserved key (and every secret) is no topic at all.

Patterns are NATS-style: dot-separated tokens, ``*`` one token, ``>`` (last
only) the rest of the topic, even none: ``hooks.>`` also matches ``hooks``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec

from aspen.errors import AspenError, ErrorCode
from aspen.storage.keyspace import is_secret, reserved_prefix_of
from aspen.storage.records import WatchEvent

MAX_PATTERN_BYTES = 256

KV_WRITE = "hooks.kv.write_committed"
KV_DELETE = "hooks.kv.delete_committed"
PLUGIN_INSTALLED = "hooks.plugin.installed"
PLUGIN_UPDATED = "hooks.plugin.updated"
PLUGIN_REMOVED = "hooks.plugin.removed"
PLUGIN_STATE = "hooks.plugin.state_changed"
NODE_JOINED = "hooks.cluster.node_joined"
NODE_LEFT = "hooks.cluster.node_left"
JOB_TOPIC = "hooks.job."  # + the job's new state

_MANIFESTS = "__plugins:manifests:"
_STATUS = "__plugins:status:"
_JOB_STATE = "__jobs:state:"
_NODES = "__cluster:nodes:"


class HookEvent(NamedTuple):
    """One topic of one change. ``key`` orders delivery (per key) and, for
    KV topics, is what a subscriber's prefixes are checked against;
    ``value`` is the written bytes of a KV put (None otherwise)."""

    topic: str
    key: str
    revision: int
    event: dict[str, Any]
    value: bytes | None = None

    @property
    def is_kv(self) -> bool:
        return self.topic in (KV_WRITE, KV_DELETE)


# --- patterns -----------------------------------------------------------------


def check_pattern(pattern: object) -> str:
    """``HOOK_PATTERN_INVALID`` unless ``pattern`` is 1-256 bytes of
    non-empty dot-separated tokens, ``*`` a whole token, ``>`` only last."""

    def bad(why: str) -> AspenError:
        return AspenError(ErrorCode.HOOK_PATTERN_INVALID, f"hook pattern {str(pattern)[:80]!r}: {why}")

    if not isinstance(pattern, str):
        raise bad("must be a string")
    if not 0 < len(pattern.encode("utf-8", "surrogatepass")) <= MAX_PATTERN_BYTES:
        raise bad(f"must be 1-{MAX_PATTERN_BYTES} bytes")
    tokens = pattern.split(".")
    for i, token in enumerate(tokens):
        if not token:
            raise bad("has an empty token")
        if token.isspace() or any(c.isspace() or ord(c) < 0x20 for c in token):
            raise bad("has whitespace or a control character")
        if ("*" in token or ">" in token) and token not in ("*", ">"):
            raise bad("'*' and '>' must be whole tokens")
        if token == ">" and i != len(tokens) - 1:
            raise bad("'>' may only be the last token")
    return pattern


def matches(pattern: str, topic: str) -> bool:
    """Whether a (valid) pattern matches a topic."""
    want, have = pattern.split("."), topic.split(".")
    for i, token in enumerate(want):
        if token == ">":  # the tokens before it matched: the rest (even none) does
            return True
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


# --- topics of a change ---------------------------------------------------------


class _Manifest(msgspec.Struct, frozen=True):
    version: str = ""
    enabled: bool = True


class _Record(msgspec.Struct):
    manifest: _Manifest = _Manifest()


class _Status(msgspec.Struct):
    state: str = ""


def _decode(raw: bytes, kind: type) -> Any:
    try:
        return msgspec.json.decode(raw, type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return kind()


def hook_event(change: WatchEvent) -> HookEvent | None:
    """The topic of one committed change, or None when it has none."""
    kv, rev = change.kv, change.revision
    key, put = kv.key, change.type == "put"
    if is_secret(key):
        return None
    if reserved_prefix_of(key) is None:
        topic = KV_WRITE if put else KV_DELETE
        return HookEvent(
            topic, key, rev, {"key": key, "revision": rev, "version": kv.version}, kv.value if put else None
        )
    if key.startswith(_MANIFESTS):
        name = key[len(_MANIFESTS) :]
        if not put:
            return HookEvent(PLUGIN_REMOVED, key, rev, {"name": name, "revision": rev})
        m = _decode(kv.value, _Record).manifest
        topic = PLUGIN_INSTALLED if kv.version == 1 else PLUGIN_UPDATED
        return HookEvent(topic, key, rev, {"name": name, "version": m.version, "enabled": m.enabled, "revision": rev})
    if key.startswith(_STATUS) and put:
        name, _, node_id = key[len(_STATUS) :].partition(":")
        state = _decode(kv.value, _Status).state
        return HookEvent(PLUGIN_STATE, key, rev, {"name": name, "node_id": node_id, "state": state, "revision": rev})
    if key.startswith(_JOB_STATE) and put:
        state, _, job_id = key[len(_JOB_STATE) :].partition(":")
        job_type = kv.value.decode(errors="replace")
        return HookEvent(
            JOB_TOPIC + state, job_id, rev, {"job_id": job_id, "job_type": job_type, "state": state, "revision": rev}
        )
    if key.startswith(_NODES) and (kv.version == 1 or not put):
        node_id = key[len(_NODES) :]
        return HookEvent(NODE_JOINED if put else NODE_LEFT, key, rev, {"node_id": node_id, "revision": rev})
    return None
