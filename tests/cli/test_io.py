"""camfast.utils: the atomic writer (files appear whole or not at all), the progress reporter, the folder lock."""

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


def test_atomic_write_takes_a_writer_callback(tmp_path):
    path = tmp_path / "cb.bin"
    atomic_write(path, lambda f: f.write(b"from a callback"))
    assert path.read_bytes() == b"from a callback"


def test_progress_lines_every_n_items_and_quiet_for_short_scans(capsys):
    from camfast.utils.progress import Progress

    p = Progress(5, "scan", mode="lines", every=2, noun="files", unit="file")
    for _ in range(5):
        p.update()
    lines = capsys.readouterr().err.splitlines()
    assert [ln.split(",")[0] for ln in lines] == ["scan: 2/5 files", "scan: 4/5 files", "scan: 5/5 files"]
    quiet = Progress(10, "scan", mode="lines", interval=0.0, min_total=2000)
    quiet.set(10)
    assert capsys.readouterr().err == ""


def test_folder_lock_is_exclusive_and_released(tmp_path):
    import subprocess
    import sys

    from camfast.utils.lock import FolderLocked, folder_lock

    probe = ("import sys\nfrom camfast.utils.lock import folder_lock, FolderLocked\n"
             "try:\n    folder_lock(sys.argv[1]).__enter__()\nexcept FolderLocked as e:\n    sys.exit(str(e))\n")
    with folder_lock(tmp_path):
        res = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True)
        assert res.returncode == 1 and "in use by another camfast run" in res.stderr
        with pytest.raises(FolderLocked):  # a second open file description in this process too
            with folder_lock(tmp_path):
                pass
    res = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
