"""Process inspection shared by the tests that start Flower processes (Linux /proc)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from healthfed.federation.deploy.processes import descendants


def process_tree(pids: Iterable[int]) -> set[int]:
    """``pids`` and all their descendants."""
    out = set(pids)
    for pid in list(out):
        out.update(descendants(pid))
    return out


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def listening_addresses(pids: set[int]) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) of LISTEN sockets held by ``pids``."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A = LISTEN
                out.add(cols[1])
    return out
