"""One service per data directory and instance: two would adopt, reap and write the same jobs.

An exclusive ``flock`` on a file in the data directory, held for the process's life: the kernel
drops it however the process ends (kill -9 included), so a stale lock never blocks a start.
It guards services on one host (one filesystem); services on two hosts that share one Docker
daemon under one instance id are not detected.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import AlreadyRunning

LOCK_FILE = "orchestrator.lock"


@contextlib.contextmanager
def hold_data_dir(data_dir: Path, instance_id: str) -> Iterator[None]:
    """Hold ``data_dir`` for this process; ``AlreadyRunning`` when another one does."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            raise AlreadyRunning(
                f"another orchestrator service ({holder}) already runs on the data directory "
                f"{data_dir}: stop it first (two would adopt and write the same jobs)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, instance {instance_id}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
