"""An advisory lock on an output folder, so two runs never write (or clean) one folder at once.

``OUT/.camfast.lock`` is locked with ``flock`` (POSIX; no locking where ``fcntl`` is missing).
The lock belongs to the open file, so it goes away with the process however it ends (also
SIGKILL): a leftover lock file never blocks a later run. While a run holds it, no other
camfast run is writing there, so every temporary file in the folder is a leftover of a dead
run and may be removed.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["LOCK_NAME", "FolderLocked", "folder_lock"]

LOCK_NAME = ".camfast.lock"


class FolderLocked(RuntimeError):
    """Another live process holds the folder's lock (the message names the folder and its pid)."""


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike[str], wait: float = 0.0) -> Iterator[Path]:
    """Hold ``folder/.camfast.lock`` (the folder is created); wait up to ``wait`` seconds for it.

    Raises:
        FolderLocked: another process holds it after ``wait`` seconds.
        OSError: the folder or the lock file cannot be created (read-only, full disk...).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield path
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                    raise FolderLocked(f"{folder} is in use by another camfast run (pid {owner}); wait for it "
                                       f"to finish or choose another output folder") from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock
