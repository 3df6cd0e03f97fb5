"""The ``camfast`` command's process defaults (``camfast/_command_env.py``): ``OMP_WAIT_POLICY``
is PASSIVE in the command's process unless the user set it, and never changed for a program
that imports camfast as a library."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from camfast import _command_env

def run_script(script, text: str, var: str, value: str | None) -> subprocess.CompletedProcess:
    """Run ``text`` as the file ``script`` with ``var`` set to ``value`` (None: unset)."""
    script.write_text(text)
    environ = {k: v for k, v in os.environ.items() if k != var}
    if value is not None:
        environ[var] = value
    return subprocess.run([sys.executable, str(script)], env=environ, capture_output=True, text=True, timeout=300)


PROBE = "import os, camfast\nprint(os.environ.get('OMP_WAIT_POLICY'))\n"


@pytest.mark.parametrize(("name", "env", "expected"), [
    ("camfast", None, "PASSIVE"),  # the console script is a Python file named camfast
    ("camfast", "ACTIVE", "ACTIVE"),  # the user's choice is kept
    ("my_program.py", None, "None"),  # a library user's program is left alone
])
def test_console_script_gets_passive_waits(tmp_path, name, env, expected):
    out = run_script(tmp_path / name, PROBE, "OMP_WAIT_POLICY", env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == expected


def test_which_command_lines_are_the_command():
    py = sys.executable
    assert _command_env.is_camfast_command([py, "-m", "camfast.cli", "list"], "-m")
    assert _command_env.is_camfast_command([py, "-u", "-m", "camfast.cli"], "-m")
    assert _command_env.is_camfast_command([py, "-X", "dev", "-W", "error", "-m", "camfast.cli"], "-m")
    assert _command_env.is_camfast_command([py, "/venv/bin/camfast", "explain"], "/venv/bin/camfast")
    assert not _command_env.is_camfast_command([py, "-m", "pytest", "tests"], "-m")
    assert not _command_env.is_camfast_command([py, "train.py", "-m", "camfast.cli"], "train.py")
    assert not _command_env.is_camfast_command([py, "-c", "import camfast"], "-c")
    assert not _command_env.is_camfast_command([py], "")


LEAVE = """import atexit, sys
from camfast.cli import _leave
atexit.register(lambda: print("teardown"))
print("written", end="")  # buffered: a pipe
sys.exit(_leave(3))
"""


@pytest.mark.parametrize(("world", "teardown"), [("2", False), ("1", True), (None, True), ("x", True)])
def test_a_torchrun_rank_of_the_command_exits_without_teardown(tmp_path, world, teardown):
    """Under torchrun (WORLD_SIZE > 1) the command's process flushes its output and ends with
    its status, skipping interpreter teardown (where Gloo's threads can abort the process)."""
    out = run_script(tmp_path / "camfast", LEAVE, "WORLD_SIZE", world)
    assert out.returncode == 3, out.stderr
    assert out.stdout == ("written" + ("teardown\n" if teardown else ""))


def test_a_program_calling_main_under_torchrun_gets_the_status_back(monkeypatch):
    from camfast.cli import _leave

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert _leave(3) == 3  # this process (pytest) is not the command: it goes on
