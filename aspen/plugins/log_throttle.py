"""One log line per kind of event per interval, with a count of the rest.

A guest decides how often its calls fail: one that loops over a denied key,
a fault or a host-function error would otherwise write a line (or a whole
traceback) per call and drown the node's log. Each loaded plugin has one
:class:`LogThrottle` (on its gate); the first event of a kind is logged at
once, the ones after it within ``interval`` seconds are only counted, and
the next one logged says how many were held back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

INTERVAL_SECONDS = 10.0


class LogThrottle:
    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()  # host functions log from worker threads, faults from the loop
        self._last: dict[Hashable, list[float | int]] = {}  # kind -> [when last logged, held back since]

    def log(self, kind: Hashable, level: int, message: str, *args: Any, exc_info: Any = None) -> bool:
        """Log ``message % args`` unless ``kind`` was logged less than
        ``interval`` ago; True when it was logged."""
        now = self.clock()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last[0] < self.interval:
                last[1] += 1
                return False
            held = 0 if last is None else int(last[1])
            self._last[kind] = [now, 0]
        if held:
            message += " (%d more like it since the last report)"
            args = (*args, held)
        self.logger.log(level, message, *args, exc_info=exc_info)
        return True
