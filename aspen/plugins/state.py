"""The one lifecycle state of a plugin version, shared by the runtime and the
reconciler.

Loading (module fetched, hash and signature checked; the reconciler's step
before a runtime exists) → Initializing (instantiated, ``plugin_info``/
``plugin_init`` running; a runtime starts here) → Ready ⇄ Degraded (the
runtime's fault counter and health probes) → Stopping (draining) → Stopped;
or Failed when any step before Ready fails.
"""

from __future__ import annotations

import enum


class LifecycleState(enum.StrEnum):
    LOADING = "loading"
    INITIALIZING = "initializing"
    READY = "ready"
    DEGRADED = "degraded"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


SERVING = frozenset({LifecycleState.READY, LifecycleState.DEGRADED})
