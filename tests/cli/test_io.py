"""camfast.utils.io: files appear whole or not at all."""

from __future__ import annotations

import os
import stat

import pytest

from camfast.utils.io import atomic_path, atomic_write


def test_atomic_write_creates_folders_and_usual_mode(tmp_path):
    path = tmp_path / "a" / "b" / "out.txt"
    atomic_write(path, "hello")
    assert path.read_text() == "hello"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600
    atomic_write(path, b"\x00\x01", fsync=True)
    assert path.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.txt"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, error):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(error):
        with atomic_path(path, prefix=".mine-", suffix=".png") as tmp:
            assert os.path.dirname(tmp) == str(tmp_path)
            assert os.path.basename(tmp).startswith(".mine-") and tmp.endswith(".png")
            with open(tmp, "wb") as f:
                f.write(b"half")
            raise error()
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
