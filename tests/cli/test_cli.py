"""The `camfast` command frame: the console script, `python -m camfast.cli`, subcommand dispatch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import camfast
from camfast.cli import SUBCOMMANDS, main


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_console_script_is_installed_and_runs():
    script = Path(sys.executable).with_name("camfast")
    if not script.exists():
        pytest.skip("camfast is not installed as a package in this interpreter's environment")
    res = _run([str(script), "--version"])
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"camfast {camfast.__version__}"


def test_module_entry_lists_every_subcommand():
    res = _run([sys.executable, "-m", "camfast.cli", "--help"])
    assert res.returncode == 0, res.stderr
    for name in SUBCOMMANDS:
        assert name in res.stdout


def test_no_subcommand_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_unknown_subcommand_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["frobnicate"])
    assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    assert f"camfast {name}" in capsys.readouterr().out


def test_a_subcommand_that_cannot_import_reports_the_import_error(monkeypatch, capsys):
    monkeypatch.setitem(SUBCOMMANDS, "broken", ("camfast_no_such_module_for_this_test", "a broken command"))
    assert main(["broken", "--some-option"]) == 2
    err = capsys.readouterr().err
    assert "camfast broken: No module named 'camfast_no_such_module_for_this_test'" in err
    assert "unrecognized arguments" not in err
