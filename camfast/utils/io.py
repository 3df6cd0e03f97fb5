"""Atomic file writes: every file camfast writes appears whole or not at all.

The one writer of the package (the commands, the benchmarks' result files): a temporary
file in the destination's folder (same file system) is filled, then renamed over the
destination (``os.replace``, atomic on POSIX and Windows). An error or an interrupt
(``KeyboardInterrupt`` too) removes the temporary file and leaves whatever was at the
destination untouched.

Temporary names stay within the file system's name limit (``NAME_MAX``, 255 bytes on most):
a long destination name is shortened in its temporary name, so any name that is valid as a
destination can be written (no ``ENAMETOOLONG`` from the temporary file).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["TMP_SUFFIX", "atomic_path", "atomic_write", "temporary_name"]

#: every temporary file ends with this
TMP_SUFFIX = ".tmp"
_RANDOM = 8  # characters tempfile.mkstemp adds to a name


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (AttributeError, OSError, ValueError):  # not POSIX, or the folder is not there yet
        return 255


def temporary_name(name: str, prefix: str, suffix: str, limit: int = 255) -> str:
    """``prefix + name + "."`` shortened so that, with mkstemp's random part and ``suffix``,
    the temporary file's name fits in ``limit`` bytes (a shortened name keeps a hash of the
    full one, so two long names never share a temporary prefix)."""
    room = limit - len(suffix.encode()) - _RANDOM
    full = f"{prefix}{name}."
    if len(full.encode()) <= room:
        return full
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    keep = room - len(prefix.encode()) - len(digest) - 2
    short = name.encode()[:max(0, keep)].decode(errors="ignore")
    return f"{prefix}{short}~{digest}."


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], prefix: str | None = None, suffix: str = TMP_SUFFIX,
                fsync: bool = False) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``.

    Args:
        path: the destination (its folder is created if missing).
        prefix: of the temporary file's name (default ``"."``, a hidden file); callers that
            clean up leftovers of killed runs pass their own marker.
        suffix: of the temporary file's name (some writers pick the format from it, e.g.
            ``".png"`` for matplotlib's ``savefig``).
        fsync: flush the file to disk before the rename (survives power loss, slower).

    The file gets the usual permissions (``0666 & ~umask``), not ``mkstemp``'s ``0600``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    head = temporary_name(path.name, "." if prefix is None else prefix, suffix, _name_max(path.parent))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=head, suffix=suffix)
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


def atomic_write(path: str | os.PathLike[str], data: str | bytes | Callable[[BinaryIO], object], *,
                 fsync: bool = False, prefix: str | None = None) -> None:
    """Write ``data`` to ``path`` atomically.

    ``data`` is text (written as UTF-8), bytes, or a writer callback ``data(file)`` called
    with the temporary file open for binary writing (``np.save``, ``PIL.Image.save(f, format=...)``).
    For writers that want a path instead (matplotlib's ``savefig``), use :func:`atomic_path`.
    """
    with atomic_path(path, prefix=prefix, fsync=fsync) as tmp, open(tmp, "wb") as f:
        if callable(data):
            data(f)
        else:
            f.write(data.encode() if isinstance(data, str) else data)
