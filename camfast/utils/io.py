"""Atomic file writes: every file camfast writes appears whole or not at all.

A writer fills a temporary file in the destination's folder (same file system), which is
then renamed over the destination (``os.replace``, atomic on POSIX and Windows). An error
or an interrupt (``KeyboardInterrupt`` too) removes the temporary file and leaves whatever
was at the destination untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_write"]


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], prefix: str | None = None, suffix: str = ".tmp",
                fsync: bool = False) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``.

    Args:
        path: the destination (its folder is created if missing).
        prefix: of the temporary file's name (default ``".<name>."``, a hidden file);
            callers that clean up leftovers of killed runs pass their own marker.
        suffix: of the temporary file's name (some writers pick the format from it, e.g.
            ``".png"`` for matplotlib's ``savefig``).
        fsync: flush the file to disk before the rename (survives power loss, slower).

    The file gets the usual permissions (``0666 & ~umask``), not ``mkstemp``'s ``0600``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}." if prefix is None else prefix,
                               suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _default_mode())
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write(path: str | os.PathLike[str], data: str | bytes, fsync: bool = False) -> None:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` atomically."""
    with atomic_path(path, fsync=fsync) as tmp, open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
