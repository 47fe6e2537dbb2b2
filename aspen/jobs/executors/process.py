"""Running a child process for a job so that nothing outlives the job.

The child gets its own session (``start_new_session``), hence its own
process group; on timeout, cancel or exit the whole group is signalled, so a
background grandchild (``sleep 1000 &``) dies with the job. Inside the
sandbox the job also has its own PID namespace, which dies with the
sandbox's first process. Output goes through a pipe into the job's bounded
log (:mod:`aspen.jobs.output`).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Sequence
from contextlib import suppress
from typing import BinaryIO

from aspen.jobs.output import CHUNK, OutputLog, pump

KILL_GRACE_SECONDS = 2.0
# A grandchild that escaped the group may hold the pipe open: stop reading then.
DRAIN_SECONDS = 1.0


async def _copy(pipe: BinaryIO, log: OutputLog) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=CHUNK)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        await pump(reader, log)
    finally:
        transport.close()


def _signal_group(pgid: int, sig: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def run_process(
    argv: Sequence[str],
    *,
    env: dict[str, str],
    cwd: str,
    log: OutputLog,
    stdout: int | None = None,
) -> int:
    """Run ``argv`` to completion and return its exit status (negative:
    killed by that signal). stderr, and stdout unless ``stdout`` is an open
    file descriptor, go to ``log``. Cancelling the caller terminates the
    process group (SIGTERM, then SIGKILL after a grace period) before
    re-raising."""
    # Our own pipe, not asyncio's: its wait() would also wait for the pipe
    # to close, which a grandchild that escaped the group can hold forever.
    read_fd, write_fd = os.pipe()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=write_fd if stdout is None else stdout,
            stderr=write_fd,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    pipe = os.fdopen(read_fd, "rb", buffering=0)
    copier = asyncio.ensure_future(_copy(pipe, log))
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
        try:
            await asyncio.shield(asyncio.wait_for(asyncio.shield(copier), DRAIN_SECONDS))
        except (TimeoutError, asyncio.CancelledError):
            pass
        copier.cancel()
        with suppress(asyncio.CancelledError, Exception):
            await copier
        pipe.close()
