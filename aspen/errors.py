"""The one error hierarchy of Aspen.

Every failure that reaches a user carries a stable ``code`` string. The code
crosses the wire unchanged (``{"type": "Error", "body": {"code", "message",
"details"}}``), so clients, the CLI and plugins can branch on it. Add new codes
here, never inline strings elsewhere.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    # storage: keys, values, limits
    INVALID_KEY = "INVALID_KEY"
    KEY_TOO_LARGE = "KEY_TOO_LARGE"
    VALUE_TOO_LARGE = "VALUE_TOO_LARGE"
    TOO_MANY_OPERATIONS = "TOO_MANY_OPERATIONS"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    KEY_NOT_FOUND = "KEY_NOT_FOUND"
    INVALID_CONTINUATION = "INVALID_CONTINUATION"
    LEASE_NOT_FOUND = "LEASE_NOT_FOUND"
    COMPACTED = "COMPACTED"
    STORAGE_UNAVAILABLE = "STORAGE_UNAVAILABLE"
    STORE_CLOSED = "STORE_CLOSED"
    # blobs
    BLOB_NOT_FOUND = "BLOB_NOT_FOUND"
    BLOB_CORRUPT = "BLOB_CORRUPT"
    BLOB_TOO_LARGE = "BLOB_TOO_LARGE"
    INVALID_HASH = "INVALID_HASH"
    INVALID_RANGE = "INVALID_RANGE"
    BLOB_INCOMPLETE = "BLOB_INCOMPLETE"
    BLOB_PROTECTED = "BLOB_PROTECTED"
    GC_IN_PROGRESS = "GC_IN_PROGRESS"  # another node holds the blob GC lock (S3 backend)
    # rpc / node
    BAD_REQUEST = "BAD_REQUEST"
    VALIDATION_ERROR = "VALIDATION_ERROR"
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
    UNKNOWN_REQUEST = "UNKNOWN_REQUEST"
    NO_HANDLER = "NO_HANDLER"
    CAPABILITY_UNAVAILABLE = "CAPABILITY_UNAVAILABLE"
    # auth, in the order they are checked
    UNAUTHENTICATED = "UNAUTHENTICATED"
    INVALID_SIGNATURE = "INVALID_SIGNATURE"
    TOKEN_EXPIRED = "TOKEN_EXPIRED"
    TOKEN_REVOKED = "TOKEN_REVOKED"
    WRONG_AUDIENCE = "WRONG_AUDIENCE"
    UNAUTHORIZED = "UNAUTHORIZED"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"  # details: quota, limit, and the use or request over it
    FORBIDDEN = "FORBIDDEN"
    HOST_NOT_ALLOWED = "HOST_NOT_ALLOWED"  # Host header not among the node's names (DNS rebinding)
    ORIGIN_NOT_ALLOWED = "ORIGIN_NOT_ALLOWED"  # a browser Origin not in [node] allowed_origins
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"  # /v1/rpc takes only JSON or msgpack
    TLS_VERIFY_FAILED = "TLS_VERIFY_FAILED"  # the node's certificate did not verify (see --cacert)
    LISTEN_ADDRESS_IN_USE = "LISTEN_ADDRESS_IN_USE"  # node start: something else serves on listen/metrics_listen
    TIMEOUT = "TIMEOUT"
    UNAVAILABLE = "UNAVAILABLE"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    WATCH_NOT_FOUND = "WATCH_NOT_FOUND"
    INTERNAL = "INTERNAL"
    # plugins
    PERMISSION_DENIED = "PERMISSION_DENIED"
    KV_PREFIX_DENIED = "KV_PREFIX_DENIED"
    RESERVED_KEY = "RESERVED_KEY"  # a client write under system key space
    PLUGIN_TRAP = "PLUGIN_TRAP"
    PLUGIN_TIMEOUT = "PLUGIN_TIMEOUT"
    PLUGIN_OOM = "PLUGIN_OOM"
    PLUGIN_BAD_OUTPUT = "PLUGIN_BAD_OUTPUT"
    PLUGIN_OVERLOADED = "PLUGIN_OVERLOADED"
    PLUGIN_NOT_FOUND = "PLUGIN_NOT_FOUND"
    PLUGIN_LOAD_FAILED = "PLUGIN_LOAD_FAILED"
    PLUGIN_CALLBACK_FAILED = "PLUGIN_CALLBACK_FAILED"  # plugin_on_timer / on_hook_event answered {"ok": false}
    HOOK_PATTERN_INVALID = "HOOK_PATTERN_INVALID"  # a hook subscription pattern (aspen.hooks.topics)
    PLUGIN_TOO_MANY_SUBSCRIPTIONS = "PLUGIN_TOO_MANY_SUBSCRIPTIONS"  # more than 16 hook patterns
    PLUGIN_FAILED = "PLUGIN_FAILED"  # a process plugin in a crash loop: no longer restarted (details: stderr)
    PLUGIN_TOO_MANY_TIMERS = "PLUGIN_TOO_MANY_TIMERS"  # more than 16 live timers (details: max)
    PLUGIN_TIMER_INVALID = "PLUGIN_TIMER_INVALID"  # a timer name or interval out of range (details: field)
    INVALID_MANIFEST = "INVALID_MANIFEST"
    PLUGIN_LEASE_TTL_OUT_OF_RANGE = "PLUGIN_LEASE_TTL_OUT_OF_RANGE"  # aspen_lease_grant's ttl (details: min, max)
    PLUGIN_TOO_MANY_LEASES = "PLUGIN_TOO_MANY_LEASES"  # a plugin's live leases (details: plugin, limit)
    # a process plugin's network, answered by its egress proxy (aspen.plugins.process.egress)
    PLUGIN_EGRESS_DENIED = "PLUGIN_EGRESS_DENIED"  # 403: the host:port is not in allowed_hosts
    PLUGIN_EGRESS_ADDRESS_REFUSED = "PLUGIN_EGRESS_ADDRESS_REFUSED"  # 403: a name resolved to a non-global address
    PLUGIN_EGRESS_TOO_MANY_CONNECTIONS = "PLUGIN_EGRESS_TOO_MANY_CONNECTIONS"  # 429: the plugin's open connections
    PLUGIN_EGRESS_UNREACHABLE = "PLUGIN_EGRESS_UNREACHABLE"  # 502: cannot resolve or connect
    # plugin lifecycle: install-time validation (one code per rule)
    PLUGIN_NAME_INVALID = "PLUGIN_NAME_INVALID"
    PLUGIN_NAME_TOO_LONG = "PLUGIN_NAME_TOO_LONG"
    PLUGIN_HANDLES_INVALID = "PLUGIN_HANDLES_INVALID"
    PLUGIN_TOO_MANY_HANDLES = "PLUGIN_TOO_MANY_HANDLES"
    PLUGIN_PRIORITY_OUT_OF_RANGE = "PLUGIN_PRIORITY_OUT_OF_RANGE"
    PLUGIN_TOO_MANY_PREFIXES = "PLUGIN_TOO_MANY_PREFIXES"
    PLUGIN_PREFIX_INVALID = "PLUGIN_PREFIX_INVALID"
    PLUGIN_COMMAND_INVALID = "PLUGIN_COMMAND_INVALID"  # a process plugin's argv (docs/plugin-process.md)
    PLUGIN_ENV_INVALID = "PLUGIN_ENV_INVALID"
    PLUGIN_CWD_INVALID = "PLUGIN_CWD_INVALID"
    PLUGIN_ALLOWED_HOSTS_INVALID = "PLUGIN_ALLOWED_HOSTS_INVALID"  # a malformed pattern, or on a WASM manifest
    PLUGIN_TOO_MANY_ALLOWED_HOSTS = "PLUGIN_TOO_MANY_ALLOWED_HOSTS"  # more than 32 allowed_hosts patterns
    PLUGIN_BUNDLE_INVALID = "PLUGIN_BUNDLE_INVALID"  # a process plugin's files: a link, '..', an absolute name
    PLUGIN_PREFIX_OVERLAP = "PLUGIN_PREFIX_OVERLAP"
    PLUGIN_HANDLES_OVERLAP = "PLUGIN_HANDLES_OVERLAP"  # a request type another installed plugin handles
    PLUGIN_LIMIT_EXCEEDED = "PLUGIN_LIMIT_EXCEEDED"
    PLUGIN_API_VERSION_UNSUPPORTED = "PLUGIN_API_VERSION_UNSUPPORTED"
    PLUGIN_DEPENDENCY_MISSING = "PLUGIN_DEPENDENCY_MISSING"
    PLUGIN_DEPENDENCY_TOO_OLD = "PLUGIN_DEPENDENCY_TOO_OLD"
    PLUGIN_DEPENDENCY_CYCLE = "PLUGIN_DEPENDENCY_CYCLE"
    PLUGIN_TOO_MANY_PLUGINS = "PLUGIN_TOO_MANY_PLUGINS"
    PLUGIN_HAS_DEPENDENTS = "PLUGIN_HAS_DEPENDENTS"
    PLUGIN_ALREADY_INSTALLED = "PLUGIN_ALREADY_INSTALLED"
    PLUGIN_VERSION_NOT_NEWER = "PLUGIN_VERSION_NOT_NEWER"
    PLUGIN_VERSION_NOT_FOUND = "PLUGIN_VERSION_NOT_FOUND"
    PLUGIN_CONFLICT = "PLUGIN_CONFLICT"
    # plugin lifecycle: signatures and the trust store
    PLUGIN_SIGNATURE_MISSING = "PLUGIN_SIGNATURE_MISSING"
    PLUGIN_SIGNATURE_MALFORMED = "PLUGIN_SIGNATURE_MALFORMED"
    PLUGIN_HASH_MISMATCH = "PLUGIN_HASH_MISMATCH"
    PLUGIN_SIGNATURE_INVALID = "PLUGIN_SIGNATURE_INVALID"
    PLUGIN_AUTHOR_UNTRUSTED = "PLUGIN_AUTHOR_UNTRUSTED"
    PLUGIN_AUTHOR_NOT_FOUND = "PLUGIN_AUTHOR_NOT_FOUND"
    SIGNING_KEY_EXISTS = "SIGNING_KEY_EXISTS"
    SIGNING_KEY_INVALID = "SIGNING_KEY_INVALID"
    # jobs
    JOB_NOT_FOUND = "JOB_NOT_FOUND"
    UNKNOWN_JOB_TYPE = "UNKNOWN_JOB_TYPE"
    INVALID_JOB = "INVALID_JOB"
    INVALID_STATE = "INVALID_STATE"
    STALE_EXECUTION = "STALE_EXECUTION"
    EXECUTOR_UNAVAILABLE = "EXECUTOR_UNAVAILABLE"
    # why a job ended (a job record's error_code; executors add EXIT_n, SIGNAL_n and their own)
    JOB_FAILED = "JOB_FAILED"  # a worker's failure that named no code
    DEPENDENCY_FAILED = "DEPENDENCY_FAILED"
    CANCELLED = "CANCELLED"
    WORKER_LOST = "WORKER_LOST"  # the claim expired: the pool died or stopped heartbeating
    WORKER_STOPPED = "WORKER_STOPPED"  # the pool shut down mid-run
    WORKER_ERROR = "WORKER_ERROR"  # the worker raised something other than a JobFailure
    # coordination primitives (aspen.coordination)
    COORD_NAME_INVALID = "COORD_NAME_INVALID"
    COORD_TTL_OUT_OF_RANGE = "COORD_TTL_OUT_OF_RANGE"
    COORD_WAIT_OUT_OF_RANGE = "COORD_WAIT_OUT_OF_RANGE"
    COORD_WAIT_TIMEOUT = "COORD_WAIT_TIMEOUT"  # a blocking acquire, campaign or dequeue gave up
    COORD_CONFLICT = "COORD_CONFLICT"  # a compare-and-swap lost too many times in a row
    LOCK_NOT_HELD = "LOCK_NOT_HELD"  # release/renew with a token that no longer holds the lock
    LOCK_TOO_MANY_WAITERS = "LOCK_TOO_MANY_WAITERS"
    RWLOCK_TOO_MANY_READERS = "RWLOCK_TOO_MANY_READERS"
    RWLOCK_TOO_MANY_WRITERS = "RWLOCK_TOO_MANY_WRITERS"  # holding and pending writers
    COUNTER_OVERFLOW = "COUNTER_OVERFLOW"
    COUNTER_UNDERFLOW = "COUNTER_UNDERFLOW"  # an unsigned counter would go below zero
    COUNTER_NOT_A_NUMBER = "COUNTER_NOT_A_NUMBER"
    SEMAPHORE_PERMITS_OUT_OF_RANGE = "SEMAPHORE_PERMITS_OUT_OF_RANGE"
    SEMAPHORE_TOO_MANY_HOLDERS = "SEMAPHORE_TOO_MANY_HOLDERS"
    SEMAPHORE_CAPACITY_MISMATCH = "SEMAPHORE_CAPACITY_MISMATCH"
    SEMAPHORE_NOT_HELD = "SEMAPHORE_NOT_HELD"
    ELECTION_NOT_LEADER = "ELECTION_NOT_LEADER"
    BARRIER_COUNT_OUT_OF_RANGE = "BARRIER_COUNT_OUT_OF_RANGE"
    BARRIER_NOT_ENTERED = "BARRIER_NOT_ENTERED"
    ELECTION_TOO_MANY_CANDIDATES = "ELECTION_TOO_MANY_CANDIDATES"
    SEQUENCE_BATCH_OUT_OF_RANGE = "SEQUENCE_BATCH_OUT_OF_RANGE"
    RATE_LIMIT_INVALID = "RATE_LIMIT_INVALID"  # capacity, refill rate or token count out of range
    QUEUE_NOT_FOUND = "QUEUE_NOT_FOUND"
    QUEUE_EXISTS = "QUEUE_EXISTS"
    QUEUE_FULL = "QUEUE_FULL"  # the queue holds its maximum number of items
    QUEUE_PAYLOAD_TOO_LARGE = "QUEUE_PAYLOAD_TOO_LARGE"
    QUEUE_BATCH_TOO_LARGE = "QUEUE_BATCH_TOO_LARGE"
    QUEUE_VISIBILITY_OUT_OF_RANGE = "QUEUE_VISIBILITY_OUT_OF_RANGE"
    QUEUE_RECEIPT_INVALID = "QUEUE_RECEIPT_INVALID"  # the delivery is no longer this receipt's (expired, acked)
    QUEUE_CONFIG_INVALID = "QUEUE_CONFIG_INVALID"
    # service registry app (plugins/service-registry, docs/service-registry.md): answered by the plugin
    SERVICE_NAME_INVALID = "SERVICE_NAME_INVALID"
    SERVICE_INSTANCE_INVALID = "SERVICE_INSTANCE_INVALID"
    SERVICE_ADDRESS_INVALID = "SERVICE_ADDRESS_INVALID"
    SERVICE_VERSION_INVALID = "SERVICE_VERSION_INVALID"
    SERVICE_TAGS_INVALID = "SERVICE_TAGS_INVALID"
    SERVICE_WEIGHT_INVALID = "SERVICE_WEIGHT_INVALID"
    SERVICE_METADATA_INVALID = "SERVICE_METADATA_INVALID"
    SERVICE_TTL_OUT_OF_RANGE = "SERVICE_TTL_OUT_OF_RANGE"
    SERVICE_HEALTH_INVALID = "SERVICE_HEALTH_INVALID"
    SERVICE_RECORD_TOO_LARGE = "SERVICE_RECORD_TOO_LARGE"
    SERVICE_TOKEN_INVALID = "SERVICE_TOKEN_INVALID"
    SERVICE_LIMIT_INVALID = "SERVICE_LIMIT_INVALID"
    SERVICE_STALE_TOKEN = "SERVICE_STALE_TOKEN"  # not the current registration's fencing token
    SERVICE_NOT_FOUND = "SERVICE_NOT_FOUND"
    SERVICE_CONFLICT = "SERVICE_CONFLICT"  # the instance changed under too many attempts in a row
    # hooks app (aspen.hookapp, docs/hooks-app.md)
    HOOK_NAME_INVALID = "HOOK_NAME_INVALID"
    HOOK_PREFIX_DENIED = "HOOK_PREFIX_DENIED"  # reserved, too long, or beyond what the owner may watch or read
    HOOK_ACTION_INVALID = "HOOK_ACTION_INVALID"  # a target, timeout, retries or backoff out of range
    HOOK_WEBHOOK_INVALID = "HOOK_WEBHOOK_INVALID"  # not an http(s) URL with a host, or it does not resolve
    HOOK_WEBHOOK_FORBIDDEN = "HOOK_WEBHOOK_FORBIDDEN"  # loopback/private/link-local, not in [hooks] webhook_allow
    HOOK_EXISTS = "HOOK_EXISTS"
    HOOK_NOT_FOUND = "HOOK_NOT_FOUND"  # also another owner's hook, to a caller without cluster:admin
    HOOK_QUOTA_EXCEEDED = "HOOK_QUOTA_EXCEEDED"  # details: quota (max_hooks, max_hooks_per_owner), limit
    HOOK_DELIVERY_FAILED = "HOOK_DELIVERY_FAILED"  # a webhook's transport failed or it answered other than 2xx
    # cluster
    ETCD_UNREACHABLE = "ETCD_UNREACHABLE"
    ETCD_AUTH_FAILED = "ETCD_AUTH_FAILED"  # etcd refused the configured user/password or certificate
    PEER_UNAVAILABLE = "PEER_UNAVAILABLE"
    # federation
    FEDERATION_ANNOUNCEMENT_INVALID = "FEDERATION_ANNOUNCEMENT_INVALID"  # malformed or over a limit
    FEDERATION_ANNOUNCEMENT_EXPIRED = "FEDERATION_ANNOUNCEMENT_EXPIRED"
    FEDERATION_ANNOUNCEMENT_STALE = "FEDERATION_ANNOUNCEMENT_STALE"  # a replay, or older than the one kept
    FEDERATION_CLUSTER_BLOCKED = "FEDERATION_CLUSTER_BLOCKED"
    FEDERATION_RATE_LIMITED = "FEDERATION_RATE_LIMITED"
    FEDERATION_CLUSTER_UNKNOWN = "FEDERATION_CLUSTER_UNKNOWN"  # no announcement, trust entry or request for that key


class AspenError(Exception):
    """An error with a stable ``code``, a human ``message`` and optional details.

    ``code`` may be an :class:`ErrorCode` or, for codes added by plugins, any
    upper-case string. ``details`` must be JSON-serialisable.
    """

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(f"{code}: {message}")
        self.code = str(code)
        self.message = message
        self.details = details

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> AspenError:
        return cls(
            str(body.get("code", ErrorCode.INTERNAL)),
            str(body.get("message", "")),
            **dict(body.get("details") or {}),
        )

    def __reduce__(self):  # picklable across process pools
        return (_rebuild, (self.code, self.message, self.details))


def quota_exceeded(quota: str, limit: float, used: float) -> AspenError:
    """The one shape of a quota refusal: which quota, its limit, and the
    current use (or, for a cap on one request, what it asked for)."""
    return AspenError(
        ErrorCode.QUOTA_EXCEEDED,
        f"quota {quota} exceeded: limit {limit}, in use {used}",
        quota=quota,
        limit=limit,
        used=used,
    )


def _rebuild(code: str, message: str, details: dict[str, Any]) -> AspenError:
    return AspenError(code, message, **details)
