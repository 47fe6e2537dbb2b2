"""Request and response bodies of the plugin lifecycle RPCs, shared by the
node's handler, the client and the CLI (``PluginReload`` is core and lives
in :mod:`aspen.rpc.catalog`)."""

from __future__ import annotations

import msgspec

from aspen.plugins.lifecycle import PluginStatus
from aspen.plugins.manifest import PluginManifest
from aspen.plugins.store import InstalledPlugin
from aspen.plugins.trust import TrustedAuthor
from aspen.rpc.catalog import Body

DEFAULT_WAIT_SECONDS = 15.0  # how long a change waits to serve on the answering node


class PluginInstall(Body):
    """Install (or upgrade) ``manifest`` with its module: either inline
    ``wasm`` (up to the RPC blob limit) or ``wasm_hash`` of a blob already
    uploaded (``PUT /v1/blobs``)."""

    manifest: PluginManifest
    wasm: bytes | None = None
    wasm_hash: str | None = None
    force: bool = False  # upgrade: allow a version that is not newer
    wait_seconds: float = DEFAULT_WAIT_SECONDS


class PluginUpgrade(PluginInstall):
    pass


class PluginChangeResult(Body):
    """The record after a change and this node's status once it settled."""

    name: str
    version: str
    wasm_hash: str
    generation: int
    enabled: bool
    status: PluginStatus | None = None
    affected: list[str] = msgspec.field(default_factory=list)  # other plugins changed too (cascade)


class PluginRollback(Body):
    name: str
    version: str | None = None  # None: the previous version
    wait_seconds: float = DEFAULT_WAIT_SECONDS


class PluginEnable(Body):
    name: str
    wait_seconds: float = DEFAULT_WAIT_SECONDS


class PluginDisable(Body):
    name: str
    cascade: bool = False  # also disable the plugins that depend on it
    wait_seconds: float = DEFAULT_WAIT_SECONDS


class PluginRemove(Body):
    name: str
    force: bool = False  # remove even though others depend on it (they stop loading)
    cascade: bool = False  # remove the plugins that depend on it too
    wait_seconds: float = DEFAULT_WAIT_SECONDS


class PluginRemoveResult(Body):
    removed: list[str]


class PluginList(Body):
    pass


class PluginSummary(Body):
    name: str
    version: str
    enabled: bool
    priority: int
    handles: list[str]
    app_id: str | None
    generation: int
    signed_by: str | None
    history: list[str]  # earlier versions kept for rollback, oldest first
    status: PluginStatus  # on the answering node


class PluginListResult(Body):
    count: int
    plugins: list[PluginSummary]


class PluginInfo(Body):
    name: str


class PluginInfoResult(Body):
    record: InstalledPlugin
    dependents: list[str]
    status: PluginStatus  # the answering node, with live metrics
    nodes: list[PluginStatus]  # what every node last reported


class PluginDeps(Body):
    name: str | None = None  # None: the load order of every enabled plugin
    reverse: bool = False


class DependencyState(Body):
    name: str
    min_version: str | None
    optional: bool
    installed_version: str | None
    is_satisfied: bool


class PluginProblem(Body):
    plugin: str
    code: str
    message: str


class PluginDepsResult(Body):
    load_order: list[str] = msgspec.field(default_factory=list)
    problems: list[PluginProblem] = msgspec.field(default_factory=list)
    dependencies: list[DependencyState] = msgspec.field(default_factory=list)
    dependents: list[str] = msgspec.field(default_factory=list)


class PluginCheck(Body):
    pass


class PluginCheckResult(Body):
    is_valid: bool
    checked: int
    problems: list[PluginProblem]


class PluginTrustAdd(Body):
    pubkey: str
    name: str = ""


class PluginTrustRemove(Body):
    pubkey: str


class PluginTrustRemoveResult(Body):
    pubkey: str
    was_removed: bool


class PluginTrustList(Body):
    pass


class PluginTrustListResult(Body):
    authors: list[TrustedAuthor]


# request type -> (request body, response type, response body)
LIFECYCLE_REQUESTS: dict[str, tuple[type[Body], str, type[msgspec.Struct]]] = {
    "PluginInstall": (PluginInstall, "PluginChangeResult", PluginChangeResult),
    "PluginUpgrade": (PluginUpgrade, "PluginChangeResult", PluginChangeResult),
    "PluginRollback": (PluginRollback, "PluginChangeResult", PluginChangeResult),
    "PluginEnable": (PluginEnable, "PluginChangeResult", PluginChangeResult),
    "PluginDisable": (PluginDisable, "PluginChangeResult", PluginChangeResult),
    "PluginRemove": (PluginRemove, "PluginRemoveResult", PluginRemoveResult),
    "PluginList": (PluginList, "PluginListResult", PluginListResult),
    "PluginInfo": (PluginInfo, "PluginInfoResult", PluginInfoResult),
    "PluginDeps": (PluginDeps, "PluginDepsResult", PluginDepsResult),
    "PluginCheck": (PluginCheck, "PluginCheckResult", PluginCheckResult),
    "PluginTrustAdd": (PluginTrustAdd, "PluginTrustAddResult", TrustedAuthor),
    "PluginTrustRemove": (PluginTrustRemove, "PluginTrustRemoveResult", PluginTrustRemoveResult),
    "PluginTrustList": (PluginTrustList, "PluginTrustListResult", PluginTrustListResult),
}
