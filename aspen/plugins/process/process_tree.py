"""The processes of one plugin run, found and ended without a cgroup to ask.

The sandboxed program is bubblewrap's grandchild in a session of its own, so
signalling the process group the node started reaches bwrap only; the program
dies with it (``--die-with-parent``), a moment later. The supervisor lists the
tree before it kills, signals every member, and waits for them to be gone.
"""

from __future__ import annotations

import collections
import os
from contextlib import suppress


def descendants(root: int | None) -> list[int]:
    """Every process below ``root``, from /proc (no cgroup to ask)."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            children[int(stat.rsplit(b")", 1)[1].split()[1])].append(int(entry))
    found, todo = [], list(children.get(root, [])) if root else []
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def signal_group(pid: int | None, sig: int) -> None:
    if pid is not None:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
