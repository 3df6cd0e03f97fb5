"""``camfast pseudo-label`` (the package camfast/cli/pseudo_label/).

The maps written to disk are checked against the CAM functions run directly on the same
image, decoded and resized here with Pillow independently of the command's loader.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import camfast
from camfast import pseudolabel
from camfast.cli import main as cli_main
from camfast.cli.pseudo_label import PseudoLabelConfig, find_images, parse_labels, voc_palette
from camfast.utils import io as camfast_io

TESTS = Path(__file__).resolve().parents[1]  # tests/ (pseudo_label_models.py)
ROOT = TESTS.parent
TINY = "pseudo_label_models:tiny"
SIZE = 32

# relative path -> (width, height, kind)
GOOD = {
    "top.jpg": (40, 30, "RGB"),
    "a/one.png": (33, 50, "RGB"),
    "a/two.png": (48, 48, "RGBA"),
    "a/b/three.jpg": (64, 40, "RGB"),
    "a/b/gray.png": (25, 31, "L"),
    "c/four.bmp": (37, 29, "RGB"),
    "c/five.jpg": (30, 60, "RGB"),
}
CORRUPT = "a/b/corrupt.jpg"


def _image(w: int, h: int, mode: str, seed: int) -> Image.Image:
    """A smooth blob on noise, so the CAMs are not flat."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    blob = np.exp(-((xx - w * 0.6) ** 2 + (yy - h * 0.4) ** 2) / (0.05 * w * h))
    rgb = (rng.random((h, w, 3)) * 80 + blob[..., None] * np.array([170, 60, 20])).clip(0, 255).astype(np.uint8)
    im = Image.fromarray(rgb)
    return im.convert(mode) if mode != "RGB" else im


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    for seed, (rel, (w, h, mode)) in enumerate(GOOD.items()):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        _image(w, h, mode, seed).save(root / rel)
    buf = io.BytesIO()
    _image(50, 40, "RGB", 99).save(buf, format="JPEG")
    (root / CORRUPT).write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])  # truncated JPEG
    (root / "a" / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(b"")
    return root


def run(argv: list[str]) -> int:
    return cli_main(["pseudo-label", *[str(a) for a in argv]])


def base_args(images: Path, out: Path, *extra) -> list:
    return ["--images", images, "--out", out, "--model", TINY, "--size", SIZE, "--progress", "none", *extra]


def png_header(path: Path) -> tuple[int, int, int, int]:
    """``(width, height, bit depth, colour type)`` from the PNG's IHDR chunk."""
    data = path.read_bytes()[:33]
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    w, h, depth, color = struct.unpack(">IIBB", data[16:26])
    return w, h, depth, color


def tree(out: Path) -> dict[str, int]:
    """Every file under ``out`` (but the summary and the lock) with its mtime in ns."""
    return {p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in ("summary.json", ".camfast.lock")}


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def direct(rel: str, images: Path, method=camfast.zoom_cam, target=None) -> tuple[np.ndarray, int]:
    """The map the command should write for ``rel``, computed here: ((H, W) float32, class)."""
    spec = camfast.models.load_model(TINY)
    with Image.open(images / rel) as im:
        rgb = im.convert("RGB")
    x = torch.from_numpy(np.array(rgb.resize((SIZE, SIZE), Image.BILINEAR))).permute(2, 0, 1)[None].float() / 255
    res = method(spec.model, spec.preprocess(x), target, return_layers=True)
    full = F.interpolate(res.cam[:, None], size=(rgb.height, rgb.width), mode="bilinear", align_corners=False)
    return full[0, 0].clamp(0, 1).numpy(), int(res.targets[0])


def read16(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im).astype(np.int64)


# ------------------------------------------------------------------------------ units
def test_find_images_sorted_relative_and_filtered(image_dir):
    assert find_images(image_dir) == sorted([*GOOD, CORRUPT])


def test_find_images_rejects_colliding_stems(tmp_path):
    (tmp_path / "d").mkdir()
    _image(8, 8, "RGB", 0).save(tmp_path / "d" / "x.png")
    _image(8, 8, "RGB", 0).save(tmp_path / "d" / "x.jpg")
    with pytest.raises(ValueError, match="same outputs"):
        find_images(tmp_path)
    with pytest.raises(ValueError, match="images"):
        find_images(tmp_path / "missing")


def test_voc_palette_known_colours():
    pal = voc_palette()
    assert len(pal) == 768
    rgb = [tuple(pal[3 * i:3 * i + 3]) for i in range(256)]
    # PASCAL VOC: background, aeroplane, bicycle, bird, ..., person (15), tvmonitor (20)
    assert rgb[0] == (0, 0, 0) and rgb[1] == (128, 0, 0) and rgb[2] == (0, 128, 0) and rgb[3] == (128, 128, 0)
    assert rgb[15] == (192, 128, 128) and rgb[20] == (0, 64, 128)
    assert len(set(rgb)) == 256


def test_label_map_argmax_with_background_threshold():
    maps = torch.tensor([[[0.1, 0.5, 0.9, 0.3]], [[0.2, 0.6, 0.1, 0.3]]])  # (K=2, 1, 4)
    got = pseudolabel.label_map(maps, [3, 7], threshold=0.3)
    # 0.2 < t -> bg; 0.6 > 0.5 -> class 7; 0.9 -> class 3; ties with the threshold -> bg
    assert got.tolist() == [[0, 8, 4, 0]]


def test_parse_labels_indices_names_and_errors(tmp_path):
    f = tmp_path / "labels.txt"
    f.write_text("# comment\n\n./a/one.png 3 cat\ntop.jpg dog dog\n")
    assert parse_labels(f, ["cat", "dog", "car", "tree"]) == {"a/one.png": (0, 3), "top.jpg": (1,)}
    cases = {
        "top.jpg\n": "no class",
        "top.jpg cat\ntop.jpg dog\n": "'top.jpg' is listed twice",
        "top.jpg cat\nx.jpg horse\n": "unknown class name 'horse'",
        "x.jpg 9\n": r"class index 9 out of range \[0, 4\)",
        "x.jpg -1\n": "class index -1 out of range",
    }
    for text, msg in cases.items():
        f.write_text(text)
        line = text.count("\n")
        with pytest.raises(ValueError, match=rf"labels: {re.escape(str(f))}:{line}: {msg}"):
            parse_labels(f, ["cat", "dog", "car", "tree"])
    f.write_text("x.jpg cat\n")
    with pytest.raises(ValueError, match="no class names"):
        parse_labels(f, None)
    with pytest.raises(ValueError, match="cannot read"):
        parse_labels(tmp_path / "nope.txt")


@pytest.mark.parametrize("field, value, match", [
    ("method", "fancy-cam", "method"), ("format", "jpg", "format"), ("batch_size", 0, "batch_size"),
    ("size", -3, "size"), ("workers", -1, "workers"), ("threshold", 1.5, "threshold"),
    ("threads", 0, "threads"), ("batch_size", True, "batch_size"), ("progress", "loud", "progress"),
])
def test_config_rejects_bad_values(image_dir, tmp_path, field, value, match):
    config = PseudoLabelConfig(images=image_dir, out=tmp_path / "out")
    setattr(config, field, value)
    with pytest.raises(ValueError, match=match):
        config.validate()


# ------------------------------------------------------------------------------ the command
def test_outputs_match_zoom_cam_and_corrupt_image_reported(image_dir, tmp_path, capsys):
    out = tmp_path / "out"
    rc = run(base_args(image_dir, out, "--threshold", 0.3, "--batch-size", 3))
    err = capsys.readouterr().err
    assert rc == pseudolabel.EXIT_FAILED_IMAGES == 3
    assert f"cannot read {image_dir / CORRUPT}" in err and "could not be read" in err
    s = summary(out)
    assert (s["found"], s["written"], s["failed"], s["skipped"]) == (len(GOOD) + 1, len(GOOD), 1, 0)
    assert [f["path"] for f in s["failures"]] == [CORRUPT] and s["exit_code"] == 3
    assert not list(out.rglob(f"{pseudolabel.TMP_PREFIX}*")) and not (out / "heatmaps/a/b/corrupt.png").exists()
    pal = voc_palette()
    for rel, (w, h, _) in GOOD.items():
        stem = os.path.splitext(rel)[0]
        heat, lab = out / "heatmaps" / f"{stem}.png", out / "labels" / f"{stem}.png"
        assert png_header(heat) == (w, h, 16, 0), rel  # 16-bit grayscale at the original size
        expected, cls = direct(rel, image_dir)
        got = read16(heat)
        diff = np.abs(got - np.rint(expected * 65535))
        assert diff.max() <= 1, f"{rel}: heatmap differs from zoom_cam by {diff.max()} / 65535"
        assert got.max() > 30000, f"{rel}: a flat heatmap says nothing"
        assert png_header(lab)[:4] == (w, h, 8, 3), rel  # 8-bit palette
        with Image.open(lab) as im:
            assert im.mode == "P" and im.getpalette()[:48] == pal[:48]
            labels = np.array(im)
        assert set(np.unique(labels)) <= {0, cls + 1}
        clear = np.abs(expected - 0.3) > 1e-4  # away from the threshold, the rule decides
        np.testing.assert_array_equal(labels[clear], np.where(expected[clear] > 0.3, cls + 1, 0))
        assert (labels == 0).any() and (labels == cls + 1).any(), rel


def test_rerun_skips_and_overwrite_redoes(image_dir, tmp_path):
    out = tmp_path / "out"
    assert run(base_args(image_dir, out, "--threshold", 0.5)) == 3
    first = tree(out)
    assert len(first) == 2 * len(GOOD)
    assert run(base_args(image_dir, out, "--threshold", 0.5)) == 3  # the corrupt file is still there
    assert tree(out) == first
    s = summary(out)
    assert (s["written"], s["skipped"], s["failed"]) == (0, len(GOOD), 1)
    os.unlink(image_dir / CORRUPT)
    assert run(base_args(image_dir, out, "--threshold", 0.5, "--overwrite")) == 0
    again = tree(out)
    assert again.keys() == first.keys() and all(again[k] > first[k] for k in first)
    assert summary(out)["written"] == len(GOOD)


def test_interrupted_run_leaves_no_partial_file_and_resumes(image_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real = camfast_io.atomic_write
    calls = {"n": 0}

    def flaky(path, write, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:  # the 3rd image's label map (heatmap, label per image), mid-write
            def half(f):
                f.write(b"\x89PNG partial")
                raise KeyboardInterrupt
            return real(path, half, **kwargs)
        return real(path, write, **kwargs)

    monkeypatch.setattr(camfast_io, "atomic_write", flaky)
    assert run(base_args(image_dir, out, "--threshold", 0.4, "--batch-size", 2)) == 130
    monkeypatch.setattr(camfast_io, "atomic_write", real)
    assert not list(out.rglob(f"{pseudolabel.TMP_PREFIX}*")), "temporary files left behind"
    done = tree(out)
    assert len(done) == 5  # 2 complete images + the 3rd one's heatmap, no half label map
    for rel in done:
        with Image.open(out / rel) as im:
            im.load()  # every file there is complete
    assert run(base_args(image_dir, out, "--threshold", 0.4, "--batch-size", 2)) == 3
    s = summary(out)
    assert (s["written"], s["skipped"]) == (len(GOOD) - 2, 2)  # the half-done 3rd image is redone
    final = tree(out)
    assert len(final) == 2 * len(GOOD)
    # a stale temporary file (a run killed with SIGKILL) is removed by the next run
    stale = out / "labels" / f"{pseudolabel.TMP_PREFIX}top.png.x.tmp"
    stale.write_bytes(b"junk")
    run(base_args(image_dir, out, "--threshold", 0.4))
    assert not stale.exists()


def test_labels_file_naming_an_unknown_image_is_an_error(image_dir, tmp_path, capsys):
    """Issue 12: a text labels file naming an image that is not in the folder is a mistake:
    exit 2 with FILE:LINE before anything is written."""
    out, labels = tmp_path / "out", tmp_path / "labels.txt"
    labels.write_text("top.jpg cat\n# a comment\nghost.jpg 1\nghost2.jpg 2\n")
    assert run(base_args(image_dir, out, "--labels", labels)) == 2
    err = capsys.readouterr().err
    assert f"{labels}:3: 'ghost.jpg' is not an image under" in err and "2 listed images are not" in err
    assert not (out / "heatmaps").exists() and not (out / "labels").exists()


def test_labels_file_one_map_per_class(image_dir, tmp_path, capsys):
    out, out_npy = tmp_path / "out", tmp_path / "out-npy"
    labels = tmp_path / "labels.txt"
    listed = {"top.jpg": (0, 2), "a/one.png": (4,), "a/b/three.jpg": (1, 3), CORRUPT: (0,)}
    labels.write_text("top.jpg cat car\na/one.png sky\na/b/three.jpg 1 tree\na/b/corrupt.jpg 0\n")
    assert run(base_args(image_dir, out, "--labels", labels, "--batch-size", 2)) == 3
    err = capsys.readouterr().err
    assert "4 image(s) have no line" in err
    s = summary(out)
    assert (s["written"], s["failed"], s["unlabelled"], s["settings"]["threshold"]) == (3, 1, 4, 0.15)
    for rel, classes in listed.items():
        if rel == CORRUPT:
            continue
        stem = os.path.splitext(rel)[0]
        maps = []
        for k in classes:
            path = out / "heatmaps" / f"{stem}_c{k}.png"
            expected, cls = direct(rel, image_dir, target=k)
            assert cls == k
            got = read16(path)
            assert np.abs(got - np.rint(expected * 65535)).max() <= 1, (rel, k)
            maps.append(expected)
        with Image.open(out / "labels" / f"{stem}.png") as im:
            lab = np.array(im)
        expected_lab = pseudolabel.label_map(np.stack(maps), classes, 0.15)
        stacked = np.stack(maps)
        clear = np.abs(stacked.max(0) - 0.15) > 1e-4
        if len(classes) > 1:
            top2 = np.sort(stacked, 0)
            clear &= np.abs(top2[-1] - top2[-2]) > 1e-4
        np.testing.assert_array_equal(lab[clear], expected_lab[clear])
        assert set(np.unique(lab)) <= {0, *[k + 1 for k in classes]}
    assert not (out / "heatmaps" / "c").exists()  # unlabelled images are not computed
    # npy: float16 (K, H, W), classes ascending, the same maps
    assert run(base_args(image_dir, out_npy, "--labels", labels, "--format", "npy")) == 3
    arr = np.load(out_npy / "heatmaps" / "a" / "b" / "three.npy")
    assert arr.dtype == np.float16 and arr.shape == (2, 40, 64)
    for i, k in enumerate((1, 3)):
        png = read16(out / "heatmaps" / "a" / "b" / f"three_c{k}.png") / 65535
        np.testing.assert_allclose(arr[i].astype(np.float64), png, atol=1e-3, rtol=0)


def test_labels_errors_name_file_and_line(image_dir, tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("top.jpg cat\na/one.png giraffe\n")
    assert run(base_args(image_dir, tmp_path / "out", "--labels", labels)) == 2
    assert f"{labels}:2: unknown class name 'giraffe'" in capsys.readouterr().err


@pytest.mark.parametrize("argv, match", [
    (["--batch-size", "0"], "batch_size"),
    (["--threshold", "2"], "threshold"),
    (["--model", "no_such_module:thing"], "no_such_module"),
    (["--labels", "/nonexistent/labels.txt"], "labels"),
    (["--crf"], "crf"),
])
def test_bad_arguments_exit_2_with_message(image_dir, tmp_path, capsys, argv, match):
    assert run(base_args(image_dir, tmp_path / "out", *argv)) == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "out" / "summary.json").exists()


def test_bad_choices_and_missing_folder(image_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        run(base_args(image_dir, tmp_path / "out", "--method", "fancy"))
    assert e.value.code == 2 and "--method" in capsys.readouterr().err
    assert run(base_args(tmp_path / "missing", tmp_path / "out")) == 2
    assert "images" in capsys.readouterr().err


@pytest.mark.parametrize("name, method", [("grad-cam", camfast.grad_cam), ("layer-cam", camfast.layer_cam),
                                          ("cam", camfast.cam)])
def test_other_methods_match_their_functions(image_dir, tmp_path, name, method):
    shutil.rmtree(image_dir / "a")
    out = tmp_path / "out"
    assert run(base_args(image_dir, out, "--method", name, "--format", "npy")) == 0
    for rel in ("top.jpg", "c/five.jpg"):
        expected, _ = direct(rel, image_dir, method=method)
        got = np.load(out / "heatmaps" / (os.path.splitext(rel)[0] + ".npy"))
        assert got.dtype == np.float16 and got.shape == expected.shape
        np.testing.assert_allclose(got.astype(np.float32), expected, atol=1e-3, rtol=0)


def test_rcam_and_crf_label_maps(image_dir, tmp_path):
    pytest.importorskip("pydensecrf.densecrf")
    shutil.rmtree(image_dir / "a")
    out = tmp_path / "out"
    assert run(base_args(image_dir, out, "--method", "rcam", "--threshold", 0.5)) == 0
    assert png_header(out / "heatmaps" / "top.png") == (40, 30, 16, 0)
    assert run(base_args(image_dir, tmp_path / "crf", "--threshold", 0.3, "--crf")) == 0
    with Image.open(tmp_path / "crf" / "labels" / "c" / "four.png") as im:
        lab = np.array(im)
    assert lab.shape == (29, 37) and set(np.unique(lab)) <= {0, direct("c/four.bmp", image_dir)[1] + 1}


def test_workers_give_the_same_files_and_progress_is_shown(image_dir, tmp_path, capsys):
    pytest.importorskip("tqdm")
    a, b = tmp_path / "w0", tmp_path / "w2"
    assert run(base_args(image_dir, a, "--threshold", 0.3, "--batch-size", 4, "--progress", "bar")) == 3
    err = capsys.readouterr().err
    assert "pseudo-label: 100%" in err and "8/8" in err and "img/s" in err  # tqdm: images/s and ETA
    assert run(base_args(image_dir, b, "--threshold", 0.3, "--batch-size", 4, "--workers", 2,
                         "--progress", "lines", "--log-every", 3)) == 3
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("pseudo-label: ")]
    assert [ln.split(",")[0] for ln in lines] == ["pseudo-label: 4/8 images", "pseudo-label: 8/8 images"]
    assert all(" img/s, ETA " in ln for ln in lines)
    assert tree(a).keys() == tree(b).keys()
    for rel in tree(a):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_bundled_model(tmp_path):
    spec = camfast.models.load_model()
    images = tmp_path / "samples"
    images.mkdir()
    for p in camfast.models.sample_images()[:2]:
        shutil.copy(p, images / p.name)
    out = tmp_path / "out"
    # batch 1, as recomputed below: first calls at a new shape are slow on this CPU
    assert cli_main(["pseudo-label", "--images", str(images), "--out", str(out), "--size", "96",
                     "--threshold", "0.5", "--batch-size", "1", "--progress", "none"]) == 0
    for p in sorted(images.iterdir()):
        with Image.open(p) as im:
            rgb = im.convert("RGB")
        x = torch.from_numpy(np.array(rgb.resize((96, 96), Image.BILINEAR))).permute(2, 0, 1)[None].float() / 255
        res = camfast.zoom_cam(spec.model, spec.preprocess(x), return_layers=True)
        expected = F.interpolate(res.cam[:, None], size=(rgb.height, rgb.width), mode="bilinear",
                                 align_corners=False)[0, 0].clamp(0, 1).numpy()
        heat = out / "heatmaps" / f"{p.stem}.png"
        assert png_header(heat) == (rgb.width, rgb.height, 16, 0)
        assert np.abs(read16(heat) - np.rint(expected * 65535)).max() <= 1
        # 1000 classes do not fit a palette: 16-bit label map with class + 1
        label = out / "labels" / f"{p.stem}.png"
        assert png_header(label)[2:] == (16, 0)
        assert set(np.unique(read16(label))) == {0, int(res.targets[0]) + 1}


# ------------------------------------------------------------------------------ distributed
def test_torchrun_two_processes_match_one(image_dir, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    args = base_args(image_dir, one, "--threshold", 0.3, "--batch-size", 2, "--threads", 1)
    threads = torch.get_num_threads()
    assert run(args) == 3
    assert torch.get_num_threads() == threads  # the run restores the thread count
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("CAMFAST_REQUIRE_NATIVE", None)
    args[args.index(one)] = two
    dist = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "camfast.cli", "pseudo-label", *map(str, args)],
                          env=env, capture_output=True, text=True, timeout=120)
    # every rank exits 3 (the failure count is gathered); torchrun turns a worker's non-zero
    # status into its own failure (exit 1) and names the status in its report
    assert dist.returncode == 1 and "exitcode  : 3" in dist.stderr, dist.stderr
    assert tree(one).keys() == tree(two).keys() and len(tree(one)) == 2 * len(GOOD)
    for rel in tree(one):
        assert (one / rel).read_bytes() == (two / rel).read_bytes(), rel
    s1, s2 = summary(one), summary(two)
    assert s2["world_size"] == 2 and s2["settings"]["world_size"] == 2
    for key in ("found", "written", "failed", "skipped", "failures", "exit_code"):
        assert s1[key] == s2[key], key
