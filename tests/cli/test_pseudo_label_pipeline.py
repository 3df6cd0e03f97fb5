"""``camfast pseudo-label`` as a pipeline (issue 12 item 3): all of an image's classes in one
call, outputs written on a background writer, decoding ahead.

The command's files are compared with references made here from the same pieces the
command uses (its decoder, the method, its writers) the way the command worked before:
without labels the bytes are the same; with labels, the one multi-class call is compared
with the former one-copy-of-the-image-per-class call.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import threading
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import camfast
from camfast.cli import main as cli_main
from camfast.cli.pseudo_label import background, dataset, outputs
from camfast.cli.pseudo_label.labels import label_map, voc_palette
from camfast.utils import io as camfast_io

SIZE = 32
TINY = "pseudo_label_models:tiny"
run_module = importlib.import_module("camfast.cli.pseudo_label.run")  # the package's run is its CLI entry
IMAGES = {"a.jpg": (40, 30), "b.png": (33, 50), "c/d.jpg": (64, 40), "c/e.png": (30, 60)}
LABELS = {"a.jpg": (0, 2), "b.png": (4,), "c/d.jpg": (1, 3, 4), "c/e.png": (2,)}


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "images"
    for seed, (rel, (w, h)) in enumerate(IMAGES.items()):
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:h, 0:w]
        blob = np.exp(-((xx - w * 0.6) ** 2 + (yy - h * 0.4) ** 2) / (0.05 * w * h))
        rgb = (rng.random((h, w, 3)) * 80 + blob[..., None] * np.array([170, 60, 20])).clip(0, 255)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb.astype(np.uint8)).save(root / rel)
    return root


def _run(images, out, *extra) -> int:
    return cli_main(["pseudo-label", "--images", str(images), "--out", str(out), "--model", TINY, "--size",
                     str(SIZE), "--progress", "none", *map(str, extra)])


def _reference(images, rel, classes, threshold, tmp):
    """The files of ``rel`` as the command wrote them before item 3: the image decoded by the
    command's decoder, replicated once per class (or once, top class, without classes), one
    call, upsampled, written by the command's writers. Returns ``{name: bytes}``."""
    spec = camfast.models.load_model(TINY)
    resized, (H, W), _ = dataset.load_image(images / rel, SIZE)
    x = torch.from_numpy(resized).permute(2, 0, 1)[None].to(torch.float32).div_(255)
    xin = spec.preprocess(x)
    if classes is None:
        res = camfast.zoom_cam(spec.model, xin, None, return_layers=True)
        chosen = [int(res.targets[0])]
    else:
        res = camfast.zoom_cam(spec.model, xin[[0] * len(classes)], list(classes), return_layers=True)
        chosen = list(classes)
    maps = res.cam.float().detach().cpu()
    full = F.interpolate(maps[None], size=(H, W), mode="bilinear", align_corners=False)[0].clamp_(0, 1)
    paths = outputs.output_paths(tmp, rel, classes, "png", threshold is not None)
    arr = full.numpy()
    for k in range(len(chosen)):
        outputs.write_png16(paths[k], arr[k])
    if threshold is not None:
        outputs.write_label_map(paths[-1], label_map(full, chosen, threshold), voc_palette())
    return {p.relative_to(tmp).as_posix(): p.read_bytes() for p in paths}, full.numpy()


def _files(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.png"))}


def test_without_labels_the_bytes_are_the_same_as_before(images, tmp_path):
    out = tmp_path / "out"
    assert _run(images, out, "--threshold", 0.3, "--batch-size", 1) == 0
    got = _files(out)
    expected = {}
    for rel in IMAGES:
        files, _ = _reference(images, rel, None, 0.3, tmp_path / "ref")
        expected.update(files)
    assert got.keys() == expected.keys()
    for name in expected:
        assert got[name] == expected[name], name


def test_labels_all_classes_in_one_call_match_one_copy_per_class(images, tmp_path, monkeypatch):
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"{rel} {' '.join(map(str, ks))}\n" for rel, ks in LABELS.items()))
    calls = []
    real = run_module._compute

    def counting(ctx, x, target, u8):
        calls.append((x.shape[0], target))
        return real(ctx, x, target, u8)

    monkeypatch.setattr(run_module, "_compute", counting)
    out = tmp_path / "out"
    assert _run(images, out, "--labels", labels, "--batch-size", 4) == 0
    # one call for the batch of 4 images, each with all its classes (not 7 replicated images)
    assert calls == [(4, [list(LABELS[rel]) for rel in sorted(IMAGES)])]
    got = _files(out)
    for rel, classes in LABELS.items():
        files, full = _reference(images, rel, classes, 0.15, tmp_path / "ref")
        for name, data in files.items():
            assert name in got, name
            if name.startswith("heatmaps/"):
                a = np.array(Image.open(out / name)).astype(np.int64)
                b = np.array(Image.open(tmp_path / "ref" / name)).astype(np.int64)
                assert np.abs(a - b).max() <= 1, name  # float32 rounding of another batch shape at most
            else:
                with Image.open(out / name) as im:
                    lab = np.array(im)
                expected = label_map(full, classes, 0.15)
                clear = np.abs(full.max(0) - 0.15) > 1e-4
                if len(classes) > 1:
                    top2 = np.sort(full, 0)
                    clear &= np.abs(top2[-1] - top2[-2]) > 1e-4
                np.testing.assert_array_equal(lab[clear], expected[clear])


def test_writing_and_decoding_run_off_the_main_thread(images, tmp_path, monkeypatch):
    threads = {"write": set(), "decode": set()}
    real_write, real_load = camfast_io.atomic_write, dataset.load_image

    def write(*a, **k):
        threads["write"].add(threading.current_thread().name)
        return real_write(*a, **k)

    def load(*a, **k):
        threads["decode"].add(threading.current_thread().name)
        return real_load(*a, **k)

    monkeypatch.setattr(camfast_io, "atomic_write", write)
    monkeypatch.setattr(dataset, "load_image", load)
    out = tmp_path / "out"
    assert _run(images, out, "--threshold", 0.3, "--batch-size", 2) == 0
    # every image's files by the writer (the summary, written by the main thread, is not counted)
    assert threads["write"] == {"camfast-writer"}
    assert threads["decode"] == {"camfast-decode"}
    assert len(_files(out)) == 2 * len(IMAGES)


# ------------------------------------------------------------------ the two helpers


def test_prefetch_keeps_order_runs_ahead_and_raises_at_the_item():
    produced = []

    def gen():
        for i in range(5):
            produced.append(i)
            yield i
        raise RuntimeError("boom at 5")

    it = background.prefetch(gen(), depth=2)
    assert next(it) == 0
    time.sleep(0.2)
    assert produced[:3] == [0, 1, 2] and len(produced) <= 4  # bounded: at most depth ahead (+1 waiting)
    assert [next(it) for _ in range(4)] == [1, 2, 3, 4]
    with pytest.raises(RuntimeError, match="boom at 5"):
        next(it)


def test_writer_reports_each_item_stops_on_fatal_errors_and_drops_the_rest():
    done = []

    def write(i):
        if i == 2:
            raise PermissionError(13, "denied", f"f{i}")
        if i == 4:
            raise OSError(28, "No space left on device", f"f{i}")
        time.sleep(0.01)

    w = background.Writer(write, lambda i, e: done.append((i, None if e is None else e.errno)), depth=2,
                          stops=lambda e: e.errno == 28)
    for i in range(8):
        w.put(i)
    w.close()
    # 0, 1, 3 written, 2 failed (reported, the run goes on), 4 stopped the writer: 5.. dropped
    assert done == [(0, None), (1, None), (2, 13), (3, None), (4, 28)]

    def interrupted(i):
        if i == 1:
            raise KeyboardInterrupt
    w = background.Writer(interrupted, lambda i, e: done.append(i), depth=4)
    with pytest.raises(KeyboardInterrupt):
        for i in range(6):
            w.put(i)
        w.close()
    assert w.abort() == []


# ------------------------------------------------------------------ --scales, --flip, --format irn (item 3)


def _multiscale_reference(images, rel, classes, scales, flip):
    from camfast.methods.multiscale import multiscale

    spec = camfast.models.load_model(TINY)
    _, (H, W), original = dataset.load_image(images / rel, SIZE, keep_original=True)
    x = torch.from_numpy(original).permute(2, 0, 1)[None].to(torch.float32).div_(255)
    res = multiscale("zoom-cam", spec.model, spec.preprocess(x), [list(classes)], scales=scales, flip=flip)
    return res.cam[0].numpy(), res.high_res[0].numpy(), res.targets[0].tolist(), (H, W)


def test_format_irn_reads_as_irn_reads_it_and_equals_the_library_call(images, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"{rel} {' '.join(map(str, ks))}\n" for rel, ks in LABELS.items()))
    out = tmp_path / "out"
    assert _run(images, out, "--labels", labels, "--format", "irn", "--scales", "1.0,0.5,1.5") == 0
    s = json.loads((out / "summary.json").read_text())["settings"]
    assert s["scales"] == [1.0, 0.5, 1.5] and s["flip"] is True and s["format"] == "irn"
    for rel, classes in LABELS.items():
        path = out / "cam" / (os.path.splitext(rel)[0] + ".npy")
        d = np.load(path, allow_pickle=True).item()  # IRN's step/eval_cam.py reads it so
        assert set(d) == {"keys", "cam", "high_res"}
        cam, high, keys, (H, W) = _multiscale_reference(images, rel, classes, (1.0, 0.5, 1.5), True)
        assert d["keys"].tolist() == list(classes) == keys and d["keys"].dtype == np.int64
        assert d["cam"].shape == (len(classes), math.ceil(H / 4), math.ceil(W / 4)) and d["cam"].dtype == np.float32
        assert d["high_res"].shape == (len(classes), H, W) and d["high_res"].dtype == np.float32
        np.testing.assert_allclose(d["cam"], cam, atol=1e-6, rtol=0)
        np.testing.assert_allclose(d["high_res"], np.clip(high, 0, 1), atol=1e-6, rtol=0)
        # IRN's eval: background plane, argmax, keys + 1
        cams = np.pad(d["high_res"], ((1, 0), (0, 0), (0, 0)), mode="constant", constant_values=0.15)
        lab = np.pad(d["keys"] + 1, (1, 0), mode="constant")[np.argmax(cams, axis=0)]
        with Image.open(out / "labels" / (os.path.splitext(rel)[0] + ".png")) as im:
            written = np.array(im)
        clear = np.abs(np.sort(cams, 0)[-1] - np.sort(cams, 0)[-2]) > 1e-4
        np.testing.assert_array_equal(written[clear], lab[clear])
        # and camfast's own evaluation reads it without unpickling anything else
        from camfast.evaluation.pseudo_labels import read_prediction

        pred = read_prediction(path)
        assert pred.keys.tolist() == list(classes) and np.array_equal(pred.scores, d["high_res"])


def test_scales_and_flip_with_png_heatmaps(images, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("a.jpg 0 2\nc/d.jpg 3\n")
    out = tmp_path / "out"
    assert _run(images, out, "--labels", labels, "--scales", "1,0.5", "--flip") == 0
    for rel, classes in (("a.jpg", (0, 2)), ("c/d.jpg", (3,))):
        _, high, _, _ = _multiscale_reference(images, rel, classes, (1.0, 0.5), True)
        for k, m in zip(classes, high):
            got = np.array(Image.open(out / "heatmaps" / f"{os.path.splitext(rel)[0]}_c{k}.png")).astype(np.int64)
            assert np.abs(got - np.rint(np.clip(m, 0, 1) * 65535)).max() <= 1
    with pytest.raises(SystemExit) as e:  # argparse: exit status 2, the argument named
        cli_main(["pseudo-label", "--images", str(images), "--out", str(tmp_path / "x"), "--scales", "1,-2"])
    assert e.value.code == 2


@pytest.mark.parametrize("deflate", ["default", "zlib"])
@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 1), (2, 2), (37, 53), (375, 500)])
def test_png16_encoder_reads_back_bit_for_bit(shape, deflate, monkeypatch):
    """With ISA-L (when installed) and with zlib; C-ordered, Fortran-ordered and strided input."""
    if deflate == "zlib":
        import zlib

        monkeypatch.setattr(outputs, "_deflate", zlib)
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    noisy = rng.integers(0, 65536, size=shape, dtype=np.uint16)
    noisy.flat[0], noisy.flat[-1] = 0, 65535
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    smooth = np.rint((np.sin(xx / 9.0) * np.cos(yy / 7.0) + 1) / 2 * 65535).astype(np.uint16)
    wide = np.zeros((shape[0], 2 * shape[1]), np.uint16)
    wide[:, ::2] = smooth
    for values in (noisy, smooth, np.zeros(shape, np.uint16), np.full(shape, 65535, np.uint16),
                   np.asfortranarray(noisy), wide[:, ::2]):
        import io as _io

        with Image.open(_io.BytesIO(outputs.png16_bytes(values))) as im:
            assert im.format == "PNG" and im.size == (shape[1], shape[0]) and im.mode.startswith("I;16")
            back = np.asarray(im)
        assert back.dtype.itemsize == 2 and np.array_equal(back.astype(np.uint16), values)


def test_png16_encoder_refuses_what_it_cannot_write():
    for bad in (np.zeros((3, 4), np.uint8), np.zeros((3, 4, 1), np.uint16), np.zeros((0, 4), np.uint16)):
        with pytest.raises(ValueError, match="values"):
            outputs.png16_bytes(bad)


def test_label_map_is_the_argmax_over_threshold_and_maps_with_its_tie_rule():
    """Background first, then the classes in order; the first maximum wins (np.argmax's rule),
    on noisy maps with exact ties against the threshold and between classes."""
    rng = np.random.default_rng(1)
    for k in (1, 2, 3, 5):
        for _ in range(10):
            m = rng.random((k, 23, 31), dtype=np.float32)
            m[:, :4] = 0.5
            m[0, 4:8] = m[-1, 4:8]
            cls = [int(c) for c in rng.choice(20, k, replace=False)]
            best = np.concatenate([np.full((1, 23, 31), 0.5, np.float32), m]).argmax(0)
            expected = np.array([0, *[c + 1 for c in cls]])[best]
            assert np.array_equal(label_map(m, cls, 0.5), expected)
