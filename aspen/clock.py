"""Wall-clock time as Aspen stores it: integer milliseconds since the epoch.

Records, job schedules and leases all compare these numbers, so there is one
definition; any layer may import it (it imports nothing of Aspen)."""

from __future__ import annotations

import time


def now_ms() -> int:
    return time.time_ns() // 1_000_000
