"""Running a child process for a job so that nothing outlives the job.

The child gets its own session (``start_new_session``), hence its own
process group; on timeout, cancel or exit the whole group is signalled, so a
background grandchild (``sleep 1000 &``) dies with the job.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Sequence
from contextlib import suppress

KILL_GRACE_SECONDS = 2.0


def _signal_group(pgid: int, sig: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def run_process(
    argv: Sequence[str],
    *,
    env: dict[str, str],
    cwd: str,
    stdout: int,
    stderr: int,
) -> int:
    """Run ``argv`` to completion and return its exit status (negative:
    killed by that signal). Cancelling the caller terminates the process
    group (SIGTERM, then SIGKILL after a grace period) before re-raising."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    try:
        return await proc.wait()
    finally:
        # Also on a normal exit: leftover background children of the job die.
        if proc.returncode is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                await asyncio.shield(asyncio.wait_for(proc.wait(), KILL_GRACE_SECONDS))
            except (TimeoutError, asyncio.CancelledError):
                pass
        _signal_group(proc.pid, signal.SIGKILL)
        if proc.returncode is None:
            await asyncio.shield(proc.wait())
