"""Issue 13, the command items: each test failed on the main before the fix.

Crash tests run the command in a subprocess (``python -m camfast.cli``) and check its exit
status and that no traceback escapes. The models are the small seeded ones of
``tests/pseudo_label_models.py`` (and a 300-class one defined here), so each run takes
about a second.
"""

from __future__ import annotations

import errno
import json
import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from camfast.cli import common, main
from camfast.cli.pseudo_label import outputs, parse_labels
from camfast.methods import registry
from camfast.methods.engine import CAMResult
from camfast.utils import image as image_io
from camfast.utils import io as camfast_io
from camfast.utils.lock import folder_lock

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
HERE = Path(__file__).resolve().parent
TINY = "pseudo_label_models:tiny"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(HERE), str(ROOT)]), "PYTHONWARNINGS": "ignore",
       "CAMFAST_REQUIRE_NATIVE": "0"}


def _photo(path: Path, w: int = 40, h: int = 30, seed: int = 0, **save) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path, **save)
    return path


def _folder(root: Path, n: int = 3) -> Path:
    for i in range(n):
        _photo(root / f"img{i}.png", 30 + i, 24, seed=i)
    return root


def _cli(*argv, cwd: Path | None = None, timeout: float = 120, exe: list[str] | None = None
         ) -> subprocess.CompletedProcess:
    cmd = (exe or [sys.executable, "-m", "camfast.cli"]) + [str(a) for a in argv]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV, cwd=cwd)
    assert "Traceback" not in res.stderr, res.stderr
    return res


def _pl(images: Path, out: Path, *extra) -> list:
    return ["pseudo-label", "--images", images, "--out", out, "--model", TINY, "--size", 32, "--progress", "none",
            *extra]


def _ex(*items, out: Path, extra=()) -> list:
    return ["explain", *items, "--out", out, "--model", TINY, "--size", 32, *extra]


# ------------------------------------------------------------------ 3: FIFOs and other non-regular files
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_named_like_an_image_is_reported_and_skipped_not_opened(tmp_path):
    images = _folder(tmp_path / "in", 2)
    os.mkfifo(images / "pipe.jpg")
    res = _cli(*_pl(images, tmp_path / "out", "--threshold", 0.5), timeout=60)
    assert res.returncode == common.EXIT_FAILED_IMAGES, res.stderr
    assert "pipe.jpg: not a regular file" in res.stderr
    assert len(list((tmp_path / "out" / "heatmaps").glob("*.png"))) == 2
    res = _cli(*_ex(images / "pipe.jpg", images / "img0.png", out=tmp_path / "ex"), timeout=60)
    assert res.returncode == common.EXIT_FAILED_IMAGES and "not a regular file" in res.stderr
    assert (tmp_path / "ex" / "img0_zoom-cam.png").exists()
    res = _cli(*_ex(images, out=tmp_path / "ex2"), timeout=60)  # found in a folder: reported, not opened
    assert res.returncode == common.EXIT_FAILED_IMAGES and "pipe.jpg: not a regular file" in res.stderr


# ------------------------------------------------------------------ 5: long names, per-image write errors
def test_long_file_names_write_and_a_failing_image_is_reported_with_exit_3(tmp_path):
    images = _folder(tmp_path / "in", 2)
    long_name = "x" * 251 + ".png"  # 255 bytes: valid; its temporary name used to be too long
    _photo(images / long_name, 33, 21, seed=5)
    res = _cli(*_pl(images, tmp_path / "out", "--threshold", 0.5))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out" / "labels" / long_name).exists()
    # with labels its heatmap is "<stem>_c0.png": 258 bytes, no file system takes it
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"{p.name} 0\n" for p in images.iterdir()))
    res = _cli(*_pl(images, tmp_path / "out2", "--labels", labels))
    assert res.returncode == common.EXIT_FAILED_IMAGES, res.stderr
    assert f"cannot write the outputs of {long_name}" in res.stderr and "File name too long" in res.stderr
    assert sorted(p.name for p in (tmp_path / "out2" / "heatmaps").iterdir()) == ["img0_c0.png", "img1_c0.png"]


def test_temporary_names_fit_the_name_limit(tmp_path):
    name = "é" * 127  # 254 bytes
    camfast_io.atomic_write(tmp_path / name, b"ok", prefix=".camfast-tmp-")
    assert (tmp_path / name).read_bytes() == b"ok"
    a = camfast_io.temporary_name("a" * 250 + "1", ".p-", ".tmp")
    b = camfast_io.temporary_name("a" * 250 + "2", ".p-", ".tmp")
    assert a != b and len(a.encode()) + 8 + 4 <= 255


# ------------------------------------------------------------------ 6: read-only or full output
_FAIL_WRITES = """
import errno, os, sys
real = os.replace
def replace(src, dst, *a, **k):
    if {which!r} == "all" or "summary" not in str(dst):
        raise OSError(errno.{code}, os.strerror(errno.{code}), str(dst))
    return real(src, dst, *a, **k)
os.replace = replace
from camfast.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("code, which", [("ENOSPC", "all"), ("EROFS", "images")])
def test_full_or_read_only_output_stops_cleanly_naming_the_path(tmp_path, code, which):
    images = _folder(tmp_path / "in", 3)
    out = tmp_path / "out"
    script = [sys.executable, "-c", _FAIL_WRITES.format(code=code, which=which)]
    res = _cli(*_pl(images, out, "--threshold", 0.5), exe=script)
    assert res.returncode == common.EXIT_OUTPUT == 4, res.stderr
    assert "stopped: cannot write" in res.stderr and str(out / "heatmaps") in res.stderr
    assert os.strerror(getattr(errno, code)) in res.stderr
    if which == "all":
        assert "the summary could not be written either" in res.stderr
    else:
        s = json.loads((out / "summary.json").read_text())
        assert s["exit_code"] == 4 and s["stopped"].startswith("cannot write") and s["written"] == 0
    assert not [p for p in out.rglob("*") if p.name.startswith(outputs.TMP_PREFIX)]
    res = _cli(*_ex(images, out=tmp_path / "ex"), exe=script)
    assert res.returncode == 4 and "stopped: cannot write" in res.stderr and "img0_zoom-cam.png" in res.stderr


# ------------------------------------------------------------------ 7: two runs into one folder
def test_a_second_run_into_a_locked_folder_exits_and_leaves_its_temporaries(tmp_path):
    images = _folder(tmp_path / "in", 2)
    out = tmp_path / "out"
    live = out / "heatmaps" / f"{outputs.TMP_PREFIX}img0.png.abc.tmp"  # a live run's file being written
    live.parent.mkdir(parents=True)
    live.write_bytes(b"in progress")
    with folder_lock(out):
        res = _cli(*_pl(images, out, "--threshold", 0.5))
        assert res.returncode == common.EXIT_OUTPUT, res.stderr
        assert "in use by another camfast run" in res.stderr and f"pid {os.getpid()}" in res.stderr
        assert live.exists()  # not deleted: a live run owns it
    res = _cli(*_pl(images, out, "--threshold", 0.5))  # no live run: it is a leftover, removed
    assert res.returncode == 0, res.stderr
    assert not live.exists()


# ------------------------------------------------------------------ 8: --out inside --images
def test_output_folder_inside_the_image_folder_is_not_read_as_input(tmp_path):
    images = _folder(tmp_path / "in", 2)
    out = images / "maps"
    for _ in range(2):
        assert main([str(a) for a in _pl(images, out, "--threshold", 0.5)]) == 0
    assert not (out / "heatmaps" / "maps").exists()
    assert json.loads((out / "summary.json").read_text())["found"] == 2
    photos = _folder(tmp_path / "photos", 2)
    for _ in range(2):
        assert main([str(a) for a in _ex(photos, out=photos / "ex")]) == 0
    assert sorted(p.name for p in (photos / "ex").iterdir()) == ["comparison.png", "img0_zoom-cam.png",
                                                                 "img1_zoom-cam.png"]


# ------------------------------------------------------------------ 9: bombs, large images
def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def test_explain_reports_a_decompression_bomb_and_explains_the_rest(tmp_path):
    images = _folder(tmp_path / "in", 1)
    (images / "bomb.png").write_bytes(_png_claiming(60000, 60000))
    res = _cli(*_ex(images, out=tmp_path / "ex"))
    assert res.returncode == common.EXIT_FAILED_IMAGES, res.stderr
    assert "bomb.png: refused as a decompression bomb" in res.stderr
    assert (tmp_path / "ex" / "img0_zoom-cam.png").exists() and (tmp_path / "ex" / "comparison.png").exists()


def test_large_jpeg_is_decoded_reduced_with_its_true_size_reported(tmp_path):
    path = _photo(tmp_path / "big.jpg", 2400, 2200, quality=60)
    full = image_io.read_image(path)
    assert full.pixels.shape == (2200, 2400, 3) and full.original_size == (2200, 2400)
    small = image_io.read_image(path, max_side=1024)
    assert small.original_size == (2200, 2400)
    assert 1024 <= min(small.pixels.shape[:2]) < 2200  # DCT-scaled by the decoder, not after
    assert main([str(a) for a in _ex(path, out=tmp_path / "ex")]) == 0
    with Image.open(tmp_path / "ex" / "big_zoom-cam.png") as im:
        assert im.size == (small.pixels.shape[1], small.pixels.shape[0])


def test_exif_orientation_is_applied_by_both_commands(tmp_path):
    images = tmp_path / "in"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    _photo(images / "rot.jpg", 40, 30, exif=exif)
    assert image_io.read_image(images / "rot.jpg").pixels.shape == (40, 30, 3)
    assert main([str(a) for a in _ex(images / "rot.jpg", out=tmp_path / "ex")]) == 0
    assert main([str(a) for a in _pl(images, tmp_path / "pl")]) == 0
    with Image.open(tmp_path / "ex" / "rot_zoom-cam.png") as a, Image.open(tmp_path / "pl/heatmaps/rot.png") as b:
        assert a.size == b.size == (30, 40)


# ------------------------------------------------------------------ 10: --device cuda without CUDA
@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_device_without_cuda_is_a_clear_error(tmp_path):
    images = _folder(tmp_path / "in", 1)
    for argv in (_pl(images, tmp_path / "out", "--device", "cuda"), _ex(images, out=tmp_path / "ex",
                                                                         extra=["--device", "cuda"])):
        res = _cli(*argv)
        assert res.returncode == common.EXIT_USAGE == 2, res.stderr
        assert "--device cuda: CUDA is not available here" in res.stderr


# ------------------------------------------------------------------ 12: empty folders, same discovery
def test_empty_folder_is_no_images_found_in_both_commands(tmp_path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("not an image")
    for argv in (_pl(empty, tmp_path / "out"), _ex(empty, out=tmp_path / "ex")):
        res = _cli(*argv)
        assert res.returncode == common.EXIT_NO_IMAGES == 1, res.stderr
        assert "no images found" in res.stderr


def test_explain_searches_subfolders_as_pseudo_label_does(tmp_path):
    images = tmp_path / "in"
    _photo(images / "top.png")
    _photo(images / "a" / "b" / "deep.png", seed=1)
    assert main([str(a) for a in _ex(images, out=tmp_path / "ex")]) == 0
    assert (tmp_path / "ex" / "deep_zoom-cam.png").exists()
    assert image_io.find_images(images) == ["a/b/deep.png", "top.png"]


# ------------------------------------------------------------------ 13: --model module:callable, installed script
def test_model_module_in_the_working_directory_works_under_the_installed_script(tmp_path):
    script = Path(sys.executable).with_name("camfast")
    if not script.exists():
        pytest.skip("camfast is not installed as a script in this environment")
    work = tmp_path / "work"
    work.mkdir()
    (work / "my_models.py").write_text("from pseudo_label_models import tiny as net\n")
    _photo(work / "img.png")
    res = _cli("explain", "img.png", "--model", "my_models:net", "--size", 32, "--out", "ex", cwd=work,
               exe=[str(script)])
    assert res.returncode == 0, res.stderr
    assert (work / "ex" / "img_zoom-cam.png").exists()
    res = _cli("explain", "img.png", "--model", "no_such_module:net", "--out", "ex", cwd=work, exe=[str(script)])
    assert res.returncode == 2 and "--model no_such_module:net: cannot import module" in res.stderr
    assert "spec:" not in res.stderr


# ------------------------------------------------------------------ 14, 20: the labels file
def test_labels_file_with_a_bom_tabs_for_spaces_and_non_ascii_digits(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_bytes("\ufefffirst.jpg 1\nmy photo.jpg\t2 DOG\n".encode())
    assert parse_labels(labels, ["cat", "dog", "car"]) == {"first.jpg": (1,), "my photo.jpg": (1, 2)}
    labels.write_text("first.jpg 1\nsecond.jpg \u00b2\n")
    with pytest.raises(ValueError, match=rf"{labels}:2: unknown class name '\u00b2'"):
        parse_labels(labels, ["cat", "dog", "car"])
    with pytest.raises(ValueError, match=rf"{labels}:2: class '\u00b2' is not an index"):
        parse_labels(labels)


def test_image_name_with_a_space_is_labelled_end_to_end(tmp_path):
    images = tmp_path / "in"
    _photo(images / "my photo.png")
    labels = tmp_path / "labels.txt"
    labels.write_text("\ufeffmy photo.png\tdog\n", encoding="utf-8")
    assert main([str(a) for a in _pl(images, tmp_path / "out", "--labels", labels)]) == 0
    assert (tmp_path / "out" / "heatmaps" / "my photo_c1.png").exists()


# ------------------------------------------------------------------ 15: Ctrl-C
def test_interrupt_exits_130_and_writes_the_summary(tmp_path):
    images = _folder(tmp_path / "in", 4)
    out = tmp_path / "out"
    code = ("import signal, sys, os, time\n"  # a real SIGINT, sent to the process mid-run
            # as in a terminal, even when this test runs as a background job (SIGINT ignored)
            "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "from camfast.utils import io\n"
            "real, n = io.atomic_write, [0]\n"
            "def write(*a, **k):\n"
            "    n[0] += 1\n"
            "    if n[0] == 3:\n"  # the third image's write: Ctrl-C, then the write goes on
            "        os.kill(os.getpid(), signal.SIGINT)\n"
            "        time.sleep(0.5)\n"  # the main thread stops the run meanwhile: nothing after it
            "    return real(*a, **k)\n"
            "io.atomic_write = write\n"
            "from camfast.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    res = subprocess.run([sys.executable, "-c", code, *map(str, _pl(images, out, "--batch-size", 1))],
                         capture_output=True, text=True, timeout=120, env=ENV)
    assert res.returncode == common.EXIT_INTERRUPTED == 130, res.stderr
    s = json.loads((out / "summary.json").read_text())
    # the write in progress when Ctrl-C came is finished (and counted), the rest dropped
    assert s["interrupted"] is True and s["exit_code"] == 130 and s["written"] == 3
    assert not [p for p in out.rglob("*") if p.name.startswith(outputs.TMP_PREFIX)]


# ------------------------------------------------------------------ 22: figure, help, --target
def _rows():
    from camfast.cli import explain
    image = np.full((20, 30, 3), 128, np.uint8)
    over = explain.overlay(image, np.linspace(0, 1, 600, dtype=np.float32).reshape(20, 30))
    return [explain._Row("\u732b\u306e\u5199\u771f", image, "cat (0.50)", {"cam": over, "grad-cam": over})]


def test_comparison_figure_has_a_colour_bar_and_no_glyph_warnings():
    pytest.importorskip("matplotlib")
    from camfast.cli import explain
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig = explain.comparison_figure(_rows(), ["cam", "grad-cam"])
        fig.canvas.draw()
    assert len(fig.axes) == 3 + 1  # photo, two overlays, the colour bar
    assert "map value" in fig.axes[-1].get_ylabel()
    assert not [w for w in caught if "Glyph" in str(w.message)], [str(w.message) for w in caught]


def test_explain_help_has_outputs_exit_status_and_examples(capsys):
    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    text = capsys.readouterr().out
    for section in ("outputs (in --out", "exit status:", "examples:", "no images found"):
        assert section in text


def test_target_names_ignore_case_and_suggest_close_names():
    from camfast.cli import explain
    names = ["tabby cat", "tiger cat", "espresso", "dog"]
    assert explain._resolve_target("ESPRESSO", names) == 2
    assert explain._resolve_target("Dog", names) == 3
    with pytest.raises(ValueError, match="did you mean 'espresso'"):
        explain._resolve_target("expresso", names)


# ------------------------------------------------------------------ 23: label maps of many-class models
def test_label_maps_of_a_many_class_model_are_palette_pngs_when_they_fit(tmp_path):
    images = _folder(tmp_path / "in", 2)
    labels = tmp_path / "labels.txt"
    labels.write_text("img0.png 3\nimg1.png 299\n")
    argv = ["pseudo-label", "--images", images, "--out", tmp_path / "out", "--model", "pseudo_label_models:wide",
            "--size", 32, "--progress", "none", "--labels", labels, "--threshold", 0.0]
    assert main([str(a) for a in argv]) == 0
    with Image.open(tmp_path / "out/labels/img0.png") as a, Image.open(tmp_path / "out/labels/img1.png") as b:
        assert a.mode == "P" and set(np.unique(np.asarray(a))) <= {0, 4}
        assert b.mode.startswith("I") and set(np.unique(np.asarray(b))) <= {0, 300}  # 300 > 255: 16-bit
    with pytest.raises(SystemExit):
        main(["pseudo-label", "--help"])


# ------------------------------------------------------------------ issue 11: a method registered later
def test_a_method_registered_later_appears_in_both_commands(tmp_path, capsys):
    @registry.register("throwaway-cam", display="Throwaway-CAM", kind="forward-only",
                       summary="a test's method: the mean of the input")
    def throwaway_cam(model, x, target=None, *, return_layers=False, output_size=None):
        cam = x.mean(1)
        cam = (cam - cam.amin((1, 2), keepdim=True)) / (cam.amax((1, 2), keepdim=True)
                                                       - cam.amin((1, 2), keepdim=True) + 1e-12)
        if not return_layers:
            return cam
        t = torch.as_tensor(target if target is not None else [0] * x.shape[0]).reshape(-1)
        return CAMResult(cam, {}, torch.zeros(x.shape[0], 1), t.expand(x.shape[0]))

    try:
        images = _folder(tmp_path / "in", 2)
        with pytest.raises(SystemExit):
            main(["explain", "--help"])
        assert "throwaway-cam" in capsys.readouterr().out
        with pytest.raises(SystemExit):
            main(["pseudo-label", "--help"])
        assert "throwaway-cam" in capsys.readouterr().out
        assert main([str(a) for a in _ex(images, out=tmp_path / "ex", extra=["-m", "Throwaway_CAM"])]) == 0
        assert (tmp_path / "ex" / "img0_throwaway-cam.png").exists()
        assert main([str(a) for a in _pl(images, tmp_path / "pl", "--method", "ThrowawayCAM")]) == 0
        assert len(list((tmp_path / "pl" / "heatmaps").iterdir())) == 2
    finally:
        registry.unregister("throwaway-cam")
    with pytest.raises(ValueError):
        registry.get("throwaway-cam")
