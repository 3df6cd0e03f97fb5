"""camfast eval / benchmarks/wsol_table.py: the WSOL benchmark table, end to end on tiny sizes."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from camfast.evaluation import metrics, wsol
from camfast.evaluation import train as T
from camfast.cli import main as cli_main

REPO = Path(__file__).resolve().parents[2]
_FRACTIONS = ("f_ois", "f_ods", "mae")


def _check_numbers(row: dict, expect_classes: bool = True) -> None:
    for key, _ in wsol.METRIC_COLUMNS:
        value = row[key]
        if key == "top1_cls" or key == "top1_loc":
            if not expect_classes:
                assert value is None, (row["name"], key)
                continue
        assert value is not None and np.isfinite(value), (row["name"], key, value)
        hi = 1.0 if key in _FRACTIONS else 100.0
        assert 0.0 <= value <= hi, (row["name"], key, value)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One ``camfast eval synthetic --quick --out OUT`` run (3 tiny models trained, every row
    scored), from another working directory ``base/cwd``, without ``--checkpoints``."""
    base = tmp_path_factory.mktemp("wsol")
    lines: list[str] = []
    from camfast.cli import evaluate

    parser = __import__("argparse").ArgumentParser()
    evaluate.add_parser(parser)
    args = parser.parse_args(["synthetic", "--quick", "--out", str(base / "out"), "--examples", "2"])
    (base / "cwd").mkdir()
    old = os.getcwd()
    os.chdir(base / "cwd")
    try:
        assert evaluate.run(args, log=lines.append) == 0
    finally:
        os.chdir(old)
    return base, lines


def test_quick_run_writes_the_table_json_and_figure(quick_run):
    base, lines = quick_run
    out = base / "out"
    assert sorted(p.name for p in out.iterdir()) == ["wsol_checkpoints", "wsol_table.json", "wsol_table.md",
                                                     "wsol_table.png"]
    data = json.loads((out / "wsol_table.json").read_text())
    names = [r["name"] for r in data["results"]]
    assert names == [r.name for r in wsol.SYNTHETIC_ROWS]
    for row in data["results"]:
        _check_numbers(row)
        assert row["images"] == T.TrainConfig.quick().n_val
    # the three models were trained with the same budget, and each model's rows share its accuracy
    assert [t["model"] for t in data["training"]] == ["gap", "tap", "puzzle"]
    assert len({t["iterations"] for t in data["training"]}) == 1 and not any(t["reused"] for t in data["training"])
    by_model = {}
    for row in data["results"]:
        by_model.setdefault(row["model"], set()).add(row["top1_cls"])
    assert all(len(v) == 1 for v in by_model.values())
    md = (out / "wsol_table.md").read_text()
    for name in names:
        assert f"| {name} |" in md
    assert "Published numbers" in md and "59.11" in md and "51.53" in md and "orderings" in md
    assert data["stamp"]["versions"]["torch"] == torch.__version__ and data["stamp"]["date"] in md
    assert (out / "wsol_table.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # progress was shown for training and scoring
    assert any(line.startswith("[puzzle] epoch") for line in lines)
    assert any(line.startswith("[score] batch") for line in lines)
    # issue 13 item 11: the checkpoints go under --out, nothing into the working directory's ./build
    assert {p.name for p in (out / "wsol_checkpoints").iterdir()} == {"gap.pt", "tap.pt", "puzzle.pt"}
    assert list((base / "cwd").iterdir()) == []


def test_rerun_reuses_checkpoints_unless_retrain(quick_run, tmp_path):
    base, _ = quick_run
    ck = base / "out" / "wsol_checkpoints" / "gap.pt"
    before = ck.stat().st_mtime_ns
    rows = [wsol.Row("CAM", "gap", "cam")]
    lines: list[str] = []
    data = wsol.run_synthetic(tmp_path / "a", ck.parent, quick=True, rows=rows, examples=1, log=lines.append)
    assert data["training"][0]["reused"] and ck.stat().st_mtime_ns == before
    assert data["training"][0]["seconds"] > 0  # the training time recorded in the checkpoint
    assert any("reused" in line for line in lines)
    first = json.loads((base / "out" / "wsol_table.json").read_text())["results"][0]
    assert data["results"][0]["gt_known_loc"] == first["gt_known_loc"]  # same model, same data: same scores
    data = wsol.run_synthetic(tmp_path / "b", ck.parent, quick=True, rows=rows, retrain=True, examples=1,
                              log=lambda *a: None)
    assert not data["training"][0]["reused"] and data["training"][0]["iterations"] > 0


def test_benchmark_script_is_the_cli(monkeypatch):
    spec = importlib.util.spec_from_file_location("wsol_table_script", REPO / "benchmarks" / "wsol_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    seen = []
    monkeypatch.setattr("camfast.cli.main", lambda argv: seen.append(argv) or 0)
    assert module.main([]) == 0
    assert seen[-1][:2] == ["eval", "synthetic"]
    assert seen[-1][seen[-1].index("--out") + 1] == str(REPO / "benchmarks" / "results")
    assert module.main(["--quick", "--out", "x"]) == 0
    assert seen[-1] == ["eval", "synthetic", "--quick", "--out", "x", "--checkpoints",
                        str(REPO / "build" / "wsol_checkpoints")]


def test_miou_sweep_equals_camfast_metrics_miou():
    g = torch.Generator().manual_seed(1)
    k, ts = 4, (0.1, 0.35, 0.6)
    maps = torch.rand(6, 9, 11, generator=g)
    labels = torch.randint(k, (6,), generator=g)
    target = torch.randint(k + 1, (6, 9, 11), generator=g)
    target[0, :3] = 255
    sweep = wsol.MIoUSweep(k, ts)
    sweep.update(maps[:4], labels[:4], target[:4])
    sweep.update(maps[4:], labels[4:], target[4:])
    cams = torch.zeros(6, k, 9, 11)
    cams[torch.arange(6), labels] = maps
    best = []
    for j, t in enumerate(ts):
        ref = metrics.MIoU(k + 1, bg_threshold=t)
        ref.update(cams, target, torch.nn.functional.one_hot(labels, k))
        assert torch.equal(sweep.confusion(j), ref.confusion)
        best.append((ref.compute(), t))
    assert sweep.compute() == max(best)


def test_orderings_follow_the_metric_direction():
    res = [{"name": "Grad-CAM", "model": "gap", "method": "grad-cam", "top1_loc": 40.0, "max_box_acc_v2": 50.0,
            "miou": 30.0},
           {"name": "Zoom-CAM", "model": "gap", "method": "zoom-cam", "top1_loc": 45.0, "max_box_acc_v2": 48.0,
            "miou": 30.0},
           {"name": "CAM", "model": "gap", "method": "cam", "f_ois": 0.5, "mae": 0.2},
           {"name": "rCAM + CRF", "model": "gap", "method": "rcam-crf", "f_ois": 0.6, "mae": 0.3},
           {"name": "CAM, TAP model", "model": "tap", "method": "cam", "pxap": 50.0}]
    got = {(c["method"], c["metric"]): (c["agrees"], c["tie"]) for c in wsol.orderings(res)}
    assert got[("Zoom-CAM", "top1_loc")] == (True, False)
    assert got[("Zoom-CAM", "max_box_acc_v2")] == (False, False)
    assert got[("Zoom-CAM", "miou")] == (False, True)
    assert got[("rCAM + CRF", "f_ois")] == (True, False)
    assert got[("rCAM + CRF", "mae")] == (False, False)  # MAE: lower is better
    assert ("rCAM", "f_ois") not in got  # rows that are absent are not compared
    assert ("CAM, TAP model", "pxap") not in got  # nor metrics a row lacks (the baseline's pxap)
    # a real dataset's table: the one loaded model is the baseline classifier
    as_model = [{**r, "model": "model"} for r in res if r["model"] == "gap"]
    assert {(c["method"], c["metric"]) for c in wsol.orderings(as_model)} == {
        k for k in got if k[0] != "CAM, TAP model"}


# ----------------------------------------------------------------------------- real-dataset path

def _png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def fake_cub(tmp_path, monkeypatch):
    """A 3-image CUB layout (2 classes, all test images, masks) and a module with tiny models."""
    root = tmp_path / "CUB_200_2011"
    paths = ["001.A/a_1.png", "001.A/a_2.png", "002.B/b_1.png"]
    rng = np.random.default_rng(0)
    for p in paths:
        img = (rng.random((40, 48, 3)) * 80).astype(np.uint8)
        img[10:30, 12:36] += 150
        _png(root / "images" / p, img)
        m = np.zeros((40, 48), np.uint8)
        m[10:30, 12:36] = 255
        _png(root / "segmentations" / p, m)
    (root / "images.txt").write_text("".join(f"{i + 1} {p}\n" for i, p in enumerate(paths)))
    (root / "image_class_labels.txt").write_text("1 1\n2 1\n3 2\n")
    (root / "train_test_split.txt").write_text("1 0\n2 0\n3 0\n")
    (root / "bounding_boxes.txt").write_text("1 12 10 24 20\n2 12 10 24 20\n3 12 10 24 20\n")
    (root / "classes.txt").write_text("1 001.A\n2 002.B\n")
    mod = tmp_path / "wsol_fixture_models.py"
    mod.write_text(
        "import torch\nfrom camfast.train import TinyCAMNet\nfrom camfast.models import ModelSpec\n"
        "def two():\n    torch.manual_seed(0)\n"
        "    return ModelSpec(TinyCAMNet(2, width=8), lambda x: x * 2 - 1, 32, ['A', 'B'], 'tiny2')\n"
        "def five():\n    torch.manual_seed(0)\n    return TinyCAMNet(5, width=8)\n"
        "def no_head():\n    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),"
        " torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten())\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("wsol_fixture_models", None)
    return root


def test_real_dataset_path_on_a_cub_fixture(fake_cub, tmp_path):
    out = tmp_path / "out"
    rc = cli_main(["eval", "--dataset", "cub", "--root", str(fake_cub), "--model", "wsol_fixture_models:two",
                   "--out", str(out), "--batch-size", "2", "--examples", "2"])
    assert rc == 0
    data = json.loads((out / "wsol_table-cub.json").read_text())
    assert [r["name"] for r in data["results"]] == [r.name for r in wsol.INFERENCE_ROWS]
    for row in data["results"]:
        _check_numbers(row)
        assert row["images"] == 3
    assert (out / "wsol_table-cub.md").exists() and (out / "wsol_table-cub.png").exists()
    assert "32x32" in data["dataset"]  # the model spec's input size


def test_real_dataset_with_other_classes_scores_the_top1_map(fake_cub, tmp_path):
    out = tmp_path / "out"
    data = wsol.run_dataset("cub", fake_cub, "wsol_fixture_models:five", out, size=32, limit=2,
                            rows=wsol.INFERENCE_ROWS[:2], log=lambda *a: None)
    assert [r["images"] for r in data["results"]] == [2, 2]
    for row in data["results"]:
        _check_numbers(row, expect_classes=False)
    assert any("5 outputs" in n for n in data["notes"])


def test_rows_a_model_cannot_run_are_left_out(fake_cub, tmp_path):
    lines: list[str] = []
    rows = [r for r in wsol.INFERENCE_ROWS if r.method in ("cam", "grad-cam")]
    data = wsol.run_dataset("cub", fake_cub, "wsol_fixture_models:no_head", tmp_path, size=32,
                            rows=rows, log=lines.append)
    assert [r["name"] for r in data["results"]] == ["Grad-CAM"]
    assert any("skipping CAM" in line for line in lines)


@pytest.mark.parametrize("argv,message", [
    (["eval", "--dataset", "cub"], "--root DIR and --model"),
    (["eval", "synthetic", "--root", "x"], "--root"),
    (["eval", "cub", "--dataset", "voc", "--root", "x", "--model", "m:f"], "dataset given twice"),
    (["eval", "synthetic", "--batch-size", "0"], "--batch-size"),
    (["eval", "--dataset", "cub", "--root", "/nonexistent/cub", "--model", "wsol_fixture_models:two"], "nonexistent"),
    (["eval", "--dataset", "cub", "--root", "{root}", "--model", "no_such_module_xyz:f"], "no_such_module_xyz"),
    (["eval", "--dataset", "openimages", "--root", "{root}", "--model", "wsol_fixture_models:two"], "metadata"),
    (["eval", "--dataset", "cub", "--root", "{root}", "--model", "wsol_fixture_models:two", "--quick"], "--quick"),
])
def test_bad_arguments_exit_2(fake_cub, argv, message, capsys):
    argv = [a.replace("{root}", str(fake_cub)) for a in argv]
    assert cli_main(argv) == 2
    assert message in capsys.readouterr().err


def test_bad_library_arguments(tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        wsol.run_synthetic(tmp_path, tmp_path, quick=True, batch_size=0)
    with pytest.raises(TypeError, match="rows"):
        wsol.run_synthetic(tmp_path, tmp_path, quick=True, rows=["CAM"])
    with pytest.raises(TypeError, match="config"):
        wsol.run_synthetic(tmp_path, tmp_path, config={"epochs": 1})
    with pytest.raises(ValueError, match="dataset"):
        wsol.run_dataset("coco", tmp_path, "m:f", tmp_path)
    with pytest.raises(ValueError, match="method"):
        wsol.compute_maps("no-such-cam", torch.nn.Identity(), torch.rand(1, 3, 8, 8), torch.zeros(1, dtype=torch.long))
    with pytest.raises(SystemExit):
        cli_main(["eval", "--dataset", "coco"])


# ----------------------------------------------------------------------------- rows from the registry

def test_a_registered_method_is_a_row_of_both_tables():
    from camfast.methods import registry

    @registry.register("test-throwaway-cam", display="Throwaway-CAM", kind="classifier-weight",
                       summary="a test row")
    def throwaway_cam(model, x, target=None, **kwargs):
        import camfast

        return camfast.cam(model, x, target, **kwargs)

    try:
        assert wsol.Row("Throwaway-CAM", "model", "test-throwaway-cam") in wsol.INFERENCE_ROWS
        assert wsol.Row("Throwaway-CAM", "gap", "test-throwaway-cam") in wsol.SYNTHETIC_ROWS
        from camfast.evaluation.wsol import INFERENCE_ROWS  # the from-import is computed too

        assert INFERENCE_ROWS[-1].method == "test-throwaway-cam"
    finally:
        registry.unregister("test-throwaway-cam")
    assert all(r.method != "test-throwaway-cam" for r in wsol.INFERENCE_ROWS)
    # one inference row per registered method, in registration order; PaS for the NWC variant
    rows = wsol.INFERENCE_ROWS
    assert [r.method for r in rows] == registry.names()
    assert [r.name for r in rows if r.pas] == ["CAM + NWC + PaS"]


def test_synthetic_rows_are_the_papers_design_checked_against_the_registry():
    from camfast.methods import registry

    rows = wsol.SYNTHETIC_ROWS
    assert [(r.method, r.model) for r in rows[:len(wsol.SYNTHETIC_DESIGN)]] == list(wsol.SYNTHETIC_DESIGN)
    assert {r.method for r in rows} == set(registry.names())  # every method is on the table
    assert len({r.name for r in rows}) == len(rows)
    with pytest.raises(ValueError, match="unknown method"):
        wsol.Row("No-such-CAM", "gap", "no-such-cam")
    with pytest.raises(ValueError, match="model"):
        wsol.Row("CAM", "vgg", "cam")
    assert wsol.Row("Zoom", "gap", "Zoom_CAM").method == "zoom-cam"  # kept canonical


# ----------------------------------------------------------------------------- issue 13 item 11

def test_rows_needing_a_missing_module_are_left_out_before_any_training(tmp_path, monkeypatch):
    # `pip install camfast[cli]` has no pydensecrf: rCAM + CRF is left out with a note at the
    # start (not an ImportError after minutes of training)
    monkeypatch.setitem(sys.modules, "pydensecrf", None)  # find_spec() -> None, import -> ImportError
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    lines: list[str] = []
    rows = [wsol.Row.of("cam", "gap"), wsol.Row.of("rcam-crf", "gap")]
    data = wsol.run_synthetic(tmp_path / "out", quick=True, rows=rows, examples=1, log=lines.append)
    assert [r["name"] for r in data["results"]] == ["CAM"]
    skip = next(i for i, line in enumerate(lines) if "rCAM + CRF left out" in line)
    assert "pydensecrf" in lines[skip] and "camfast[crf]" in lines[skip]
    assert skip < next(i for i, line in enumerate(lines) if line.startswith("[gap] epoch"))
    assert any("rCAM + CRF left out" in n for n in data["notes"])
    assert "rCAM + CRF left out" in (tmp_path / "out" / "wsol_table.md").read_text()
    # nothing left to run: a clear error before any training
    with pytest.raises(ImportError, match="pydensecrf"):
        wsol.run_synthetic(tmp_path / "none", quick=True, rows=rows[1:], log=lines.append)
    assert not (tmp_path / "none").exists()


def test_the_stamp_names_the_commit_of_a_source_checkout():
    # provenance finds the checkout from its own path (it moved to camfast/evaluation/ once and
    # the tables said "commit None")
    from camfast.evaluation import provenance

    assert provenance.SOURCE_TREE == REPO
    st = wsol.stamp()
    if (REPO / ".git").exists():
        assert st["git"]["commit"] and st["git"]["dirty"] is not None
    assert st["native"]["loaded"] is False or st["native"]["matches_csrc"] is not None


@pytest.mark.parametrize("method", ["grad-cam", "cam"])
def test_maps_are_resized_bicubically_as_wsolevaluation(method):
    """The table's score map of a one-layer method is wsolevaluation's: the feature-resolution
    map resized with OpenCV's INTER_CUBIC, then min-max normalised (not camfast's bilinear)."""
    import cv2
    from models import resnet_like, seeded

    import camfast
    from camfast.evaluation.wsol.scoring import compute_maps

    model = seeded(resnet_like)
    x = torch.randn(2, 3, 48, 40, generator=torch.Generator().manual_seed(3))
    target = torch.tensor([1, 3])
    got = compute_maps(method, model, x, target)
    (raw,) = camfast.methods.get(method)(model, x, target, return_layers=True).layer_maps.values()
    for b in range(2):
        want = cv2.resize(raw[b].numpy().astype(np.float32), (40, 48), interpolation=cv2.INTER_CUBIC)
        want = want - want.min()
        want = want / want.max()
        np.testing.assert_allclose(got[b].numpy(), want, atol=1e-5)
    bilinear = camfast.methods.get(method)(model, x, target)
    assert float((got - bilinear).abs().max()) > 1e-3  # the two resizes differ


def test_maps_of_methods_that_end_at_the_input_size_are_kept():
    from models import resnet_like, seeded

    import camfast
    from camfast.evaluation.wsol.scoring import compute_maps

    model = seeded(resnet_like)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(compute_maps("zoom-cam", model, x, torch.tensor([2])),
                               camfast.normalize(camfast.zoom_cam(model, x, [2])))
