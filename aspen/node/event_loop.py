"""The node's event loop: uvloop when it is installed (the dependency list
sees to it), asyncio's own loop otherwise. bench_http picked uvloop: the
node served more Ping and Echo requests per second on it than on asyncio's
selector loop, with or without the spinning selector this module used to
hold (benchmarks/RESULTS.md, "bench_http"). The node, the CLI, the tests
(tests/conftest.py) and the benchmarks' bare servers all run on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

try:
    import uvloop

    new_event_loop: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
except ImportError:  # not installed, or a platform it does not build on
    new_event_loop = asyncio.new_event_loop

LOOP_FACTORY = f"{__name__}:new_event_loop"  # for uvicorn.Config(loop=...)


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the node's loop."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)
