"""`camfast explain`: top-5 printout, overlay PNGs, the comparison figure, error handling."""

from __future__ import annotations

import re
import shutil
import sys

import numpy as np
import pytest

from camfast import models
from camfast.cli import common, main

PIL = pytest.importorskip("PIL.Image")
pytest.importorskip(models.WEIGHTS_PACKAGE)
pytest.importorskip(models.CLASSES_PACKAGE)
explain = pytest.importorskip("camfast.cli.explain")

SAMPLES = {p.stem: p for p in models.sample_images()}


def _section(text: str, stem: str) -> str:
    """The printed lines for one image (from its progress line to the next one)."""
    m = re.search(rf"\] \S*{stem}\.jpg\n(.*?)(?=\n\[|\nwrote |\Z)", text, re.S)
    assert m, f"no section for {stem} in:\n{text}"
    return m.group(1)


def _png_size(path, modes=("RGB",)) -> tuple[int, int]:
    with PIL.open(path) as im:
        im.load()
        assert im.format == "PNG" and im.mode in modes
        return im.size


def test_defaults_explain_the_bundled_samples(tmp_path, capsys):
    assert main(["explain", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for stem, path in SAMPLES.items():
        with PIL.open(path) as im:
            size = im.size
        assert _png_size(tmp_path / f"{stem}_zoom-cam.png") == size
        lines = [ln for ln in _section(out, stem).splitlines() if re.match(r"\s+\d\. ", ln)]
        assert len(lines) == 5
        probs = [float(re.search(r"(\d\.\d{3})  \(class \d+\)$", ln).group(1)) for ln in lines]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.001
    coffee = _section(out, "coffee")
    assert re.search(r"1\. espresso\s+0\.(8|9)\d\d  \(class 967\)", coffee), coffee
    assert "explained 'espresso'" in coffee
    assert re.search(r"1\. (tabby|tiger cat|Egyptian cat)\s", _section(out, "chelsea"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{s}_zoom-cam.png" for s in SAMPLES] + ["comparison.png"])
    w, h = _png_size(tmp_path / "comparison.png", ("RGB", "RGBA"))  # matplotlib writes RGBA
    assert h > 300 and w > 300


def test_methods_target_and_size(tmp_path, capsys):
    rc = main(["explain", str(SAMPLES["chelsea"]), "--out", str(tmp_path / "o"), "-m", "grad-cam,cam",
               "--method", "cam", "--target", "espresso", "--size", "128", "--topk", "3"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "input 128x128" in out and "methods grad-cam, cam," in out
    assert "explained 'espresso'" in out and "top-3:" in out
    files = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert files == ["chelsea_cam.png", "chelsea_grad-cam.png", "comparison.png"]
    assert _png_size(tmp_path / "o" / "chelsea_cam.png") == (400, 266)
    # the overlays differ between methods (each method's own map is drawn)
    a = np.asarray(PIL.open(tmp_path / "o" / "chelsea_cam.png"), dtype=np.int16)
    b = np.asarray(PIL.open(tmp_path / "o" / "chelsea_grad-cam.png"), dtype=np.int16)
    assert np.abs(a - b).mean() > 1


def test_corrupt_image_is_reported_and_the_rest_written(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(SAMPLES["coffee"], folder / "coffee.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg" * 20)
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    rc = main(["explain", str(folder), str(tmp_path / "missing.png"), "--out", str(tmp_path / "o"),
               "--size", "128"])
    assert rc == 3  # EXIT_FAILED_IMAGES, as in pseudo-label
    captured = capsys.readouterr()
    assert "broken.jpg" in captured.err and "cannot read" in captured.err
    assert "missing.png" in captured.err
    assert "[1/2]" in captured.out and "[2/2]" in captured.out
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["coffee_zoom-cam.png", "comparison.png"]


@pytest.mark.parametrize("argv", [["-m", "nope"], ["--method", "zoom-cam,bogus"], ["--size", "0"],
                                  ["--topk", "x"]])
def test_bad_arguments_are_argparse_errors(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["explain", "--out", str(tmp_path), *argv])
    assert e.value.code == 2
    assert "camfast explain: error:" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("argv, message", [(["--target", "no such class at all"], "--target"),
                                           (["--target", "1000"], "--target"),
                                           (["--target", "terrier"], "several classes"),
                                           (["--model", "not-a-model"], "--model not-a-model: ")])
def test_bad_target_or_model(argv, message, tmp_path, capsys):
    assert main(["explain", "--out", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_method_list_parsing():
    assert explain._method_list("all") == common.available_methods()
    assert explain._method_list(" Zoom_CAM , cam") == ["zoom-cam", "cam"]


def test_missing_pillow_gives_a_clear_message(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "PIL", None)
    assert main(["explain", "--out", str(tmp_path)]) == 2
    assert "pip install pillow" in capsys.readouterr().err


def test_zoom_cam_of_the_coffee_sample_is_on_the_cup():
    """A real sanity check of the whole path (model, preprocessing, map, resize): the espresso
    map's mass lies on the cup (centre of the photo), not on the table around it."""
    spec = models.load_model()
    image = np.asarray(PIL.open(SAMPLES["coffee"]).convert("RGB"))
    maps = explain.explain_image(spec, image, ["zoom-cam", "grad-cam"], 224, target=967)
    h, w = image.shape[:2]
    cup = np.zeros((h, w), bool)
    cup[int(0.05 * h):int(0.65 * h), int(0.25 * w):int(0.75 * w)] = True
    for method, m in maps.items():
        assert m.shape == (h, w) and m.dtype == np.float32 and 0 <= m.min() and m.max() <= 1
        assert m[cup].mean() > 2 * m[~cup].mean(), method


def test_overlay_colours_and_pillow_comparison(tmp_path):
    image = np.full((20, 30, 3), 128, np.uint8)
    cam = np.zeros((20, 30), np.float32)
    cam[:, :15] = 1.0
    out = explain.overlay(image, cam)
    assert out.shape == image.shape and out.dtype == np.uint8
    hot, cold = out[:, :15].reshape(-1, 3).mean(0), out[:, 15:].reshape(-1, 3).mean(0)
    assert hot[0] > hot[2] + 40 and cold[2] > cold[0] + 40  # red where the map is 1, blue where 0
    row = explain._Row("x", image, "thing (0.50)", {"cam": out})
    explain._comparison_pillow(tmp_path / "grid.png", [row, row], ["cam"])
    w, h = _png_size(tmp_path / "grid.png")
    assert h > 2 * 192 and w > 2 * 192 * 30 // 20
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]  # no temporary file left

