"""``camfast eval pseudo-labels`` (camfast.evaluation.pseudo_labels), the restricted .npy reader
(camfast.evaluation.safe_npy) and VOC's cls_labels.npy (issue 12 items 4 and 5).

Every score is checked against a plain confusion-matrix implementation written here the way
IRN's ``step/eval_cam.py`` does it (np.pad a background plane, argmax, 255 ignored), on
fixture folders written by the tests.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from camfast.cli import main as cli_main
from camfast.evaluation import pseudo_labels as P
from camfast.evaluation.datasets import VOCSegmentation
from camfast.evaluation.datasets.voc import read_class_labels, read_cls_labels_npy
from camfast.evaluation.safe_npy import UnsafeFile, load_npy

Image = pytest.importorskip("PIL.Image")

N = 21
IDS = ["2007_000032", "2007_000039", "2008_000123", "2009_000001"]


def _palette_png(path: Path, arr: np.ndarray) -> None:
    im = Image.fromarray(arr.astype(np.uint8), mode="P")
    im.putpalette([v for i in range(256) for v in (i, (i * 7) % 256, (i * 13) % 256)])
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def _gt(rng, h, w, classes):
    seg = np.zeros((h, w), np.uint8)
    for k in classes:
        y, x = rng.integers(0, h - 4), rng.integers(0, w - 4)
        seg[y:y + rng.integers(3, h // 2 + 4), x:x + rng.integers(3, w // 2 + 4)] = k + 1
    seg[rng.random((h, w)) < 0.05] = 255  # boundaries
    return seg


@pytest.fixture
def folders(tmp_path):
    """GT PNGs and the same predictions as IRN dicts, camfast npy heatmaps and label PNGs."""
    rng = np.random.default_rng(0)
    gt, irn, npy, png = (tmp_path / n for n in ("SegmentationClass", "irn", "npy", "png"))
    for d in (irn, npy, png):
        d.mkdir()
    classes = {IDS[0]: (0, 14), IDS[1]: (11,), IDS[2]: (2, 6, 19), IDS[3]: ()}
    sizes = {IDS[0]: (30, 40), IDS[1]: (25, 25), IDS[2]: (40, 28), IDS[3]: (12, 20)}
    preds = {}
    for i in IDS:
        h, w = sizes[i]
        _palette_png(gt / f"{i}.png", _gt(rng, h, w, classes[i]))
        keys = np.array(classes[i], dtype=np.int64)
        high = rng.random((len(keys), h, w)).astype(np.float32) ** 2
        high[:, rng.random((h, w)) < 0.1] = np.float32(0.15)  # ties with the background at 0.15
        cam = rng.random((len(keys), -(-h // 4), -(-w // 4))).astype(np.float32)
        np.save(irn / f"{i}.npy", {"keys": keys, "cam": cam, "high_res": high})
        if len(keys):  # camfast's --labels lines hold a class at least
            np.save(npy / f"{i}.npy", high.astype(np.float16), allow_pickle=False)
        preds[i] = (keys, high)
        lab = np.where(high.max(0, initial=0) > 0.3, (keys + 1)[high.argmax(0)] if len(keys) else 0, 0)
        Image.fromarray(lab.astype(np.uint8), mode="L").save(png / f"{i}.png")
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"{i}.jpg {' '.join(map(str, classes[i])) or ''}\n" for i in IDS if classes[i]))
    return {"gt": gt, "irn": irn, "npy": npy, "png": png, "classes": classes, "preds": preds, "labels": labels,
            "root": tmp_path}


def _plain(folder_preds, gt_dir, t):
    """IRN's eval_cam.py, one threshold: pad a constant background plane, argmax, confusion."""
    conf = np.zeros((N, N), np.int64)
    for i, (keys, cams) in folder_preds.items():
        gt = np.array(Image.open(gt_dir / f"{i}.png")).astype(np.int64)
        cams = np.pad(cams.astype(np.float32), ((1, 0), (0, 0), (0, 0)), mode="constant", constant_values=t)
        k = np.pad(keys + 1, (1, 0), mode="constant")
        pred = k[np.argmax(cams, axis=0)]
        m = gt != 255
        conf += np.bincount(gt[m] * N + pred[m], minlength=N * N).reshape(N, N)
    tp = np.diag(conf).astype(np.float64)
    denom = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / denom
    return conf, iou, np.nanmean(iou)


def test_irn_dicts_equal_the_plain_confusion_matrix_at_every_threshold(folders):
    s = P.evaluate_folder(folders["irn"], folders["gt"], sweep=True, progress="none")
    assert s.images == 4 and s.threshold == pytest.approx(0.15) and s.thresholded
    assert np.allclose(s.thresholds, np.float32(P.SWEEP))
    for j, t in enumerate(s.thresholds):
        conf, iou, miou = _plain(folders["preds"], folders["gt"], np.float32(t))
        np.testing.assert_array_equal(s.confusion[j], conf, err_msg=f"threshold {t}")
        np.testing.assert_allclose(s.iou[j], iou, equal_nan=True)
        assert s.miou[j] == pytest.approx(miou)
    conf, iou, miou = _plain(folders["preds"], folders["gt"], np.float32(0.15))
    np.testing.assert_array_equal(s.confusion[s.at], conf)
    d = s.as_dict()
    assert d["miou"] == pytest.approx(miou, abs=1e-6) and d["threshold"] == 0.15
    assert d["best_miou"] == pytest.approx(np.nanmax(s.miou), abs=1e-6) and len(d["sweep"]) == 100
    # without a sweep: the one threshold, the same numbers
    one = P.evaluate_folder(folders["irn"], folders["gt"], threshold=0.15, progress="none")
    assert one.thresholds.size == 1
    np.testing.assert_array_equal(one.confusion[0], conf)


def test_camfast_npy_heatmaps_with_the_labels_file_and_label_pngs(folders):
    classes = read_class_labels(folders["labels"], by_stem=True)
    s = P.evaluate_folder(folders["npy"], folders["gt"], threshold=0.4, classes=classes, progress="none")
    f16 = {i: (k, c.astype(np.float16).astype(np.float32)) for i, (k, c) in folders["preds"].items() if len(k)}
    conf, _, miou = _plain(f16, folders["gt"], np.float32(0.4))
    np.testing.assert_array_equal(s.confusion[0], conf)
    assert s.miou[0] == pytest.approx(miou)
    # label PNGs: no threshold; the plain matrix of those labels
    s = P.evaluate_folder(folders["png"], folders["gt"], progress="none")
    assert not s.thresholded
    conf = np.zeros((N, N), np.int64)
    for i in IDS:
        gt = np.array(Image.open(folders["gt"] / f"{i}.png")).astype(np.int64)
        pred = np.array(Image.open(folders["png"] / f"{i}.png")).astype(np.int64)
        conf += np.bincount(gt[gt != 255] * N + pred[gt != 255], minlength=N * N).reshape(N, N)
    np.testing.assert_array_equal(s.confusion[0], conf)
    # heatmaps without their classes: a clear error naming the file
    with pytest.raises(ValueError, match=r"2007_000032\.npy.*--labels"):
        P.evaluate_folder(folders["npy"], folders["gt"], progress="none")


def test_cli_table_sweep_outputs_and_errors(folders, tmp_path, capsys):
    out = tmp_path / "eval"
    rc = cli_main(["eval", "pseudo-labels", "--pred", str(folders["irn"]), "--gt", str(folders["gt"]), "--sweep",
                   "--out", str(out), "--progress", "none"])
    text = capsys.readouterr().out
    assert rc == 0, text
    _, _, miou = _plain(folders["preds"], folders["gt"], np.float32(0.15))
    assert f"mIoU at threshold 0.15: {100 * miou:.2f} over 4 images" in text
    assert "| aeroplane |" in text and "| background |" in text and "best threshold" in text
    result = json.loads((out / "pseudo_labels.json").read_text())
    assert result["miou"] == pytest.approx(miou, abs=1e-6) and result["images"] == 4
    assert (out / "pseudo_labels.md").read_text().startswith("| class | IoU (%) |")
    try:
        import matplotlib  # noqa: F401
        assert (out / "pseudo_labels_sweep.png").read_bytes()[:4] == b"\x89PNG"
    except ImportError:
        pass
    # a prediction without ground truth, a size mismatch: exit 2, the file named
    (folders["gt"] / f"{IDS[1]}.png").unlink()
    assert cli_main(["eval", "pseudo-labels", "--pred", str(folders["irn"]), "--gt", str(folders["gt"])]) == 2
    assert f"{IDS[1]}.npy: no ground truth" in capsys.readouterr().err
    _palette_png(folders["gt"] / f"{IDS[1]}.png", np.zeros((5, 5)))
    assert cli_main(["eval", "pseudo-labels", "--pred", str(folders["irn"]), "--gt", str(folders["gt"])]) == 2
    assert f"{IDS[1]}.npy: prediction is 25x25, its ground truth 5x5" in capsys.readouterr().err
    assert cli_main(["eval", "pseudo-labels", "--gt", str(folders["gt"])]) == 2
    assert "--pred" in capsys.readouterr().err
    assert cli_main(["eval", "synthetic", "--sweep"]) == 2


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {_Evil.marker}",))


def _crafted_npy(path: Path, payload) -> None:
    """A .npy whose header says 'object array' and whose data is ``payload`` pickled: what
    np.save writes for a dict, with something else inside."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": ()})
    path.write_bytes(buf.getvalue() + pickle.dumps(payload, protocol=3))


def test_a_pickle_that_would_run_code_is_refused_naming_the_file(folders, tmp_path, capsys):
    marker = tmp_path / "pwned"
    _Evil.marker = marker
    bad = folders["irn"] / f"{IDS[0]}.npy"
    _crafted_npy(bad, {"keys": np.array([0]), "cam": _Evil(), "high_res": np.zeros((1, 2, 2), np.float32)})
    with pytest.raises(UnsafeFile, match=r"2007_000032\.npy: refused to load: its pickle names posix\.system"):
        load_npy(bad)
    assert cli_main(["eval", "pseudo-labels", "--pred", str(folders["irn"]), "--gt", str(folders["gt"]),
                     "--progress", "none"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "refused to load" in err and "Traceback" not in err
    assert not marker.exists()
    # in a fresh process too (nothing imported os.system for it): still refused, nothing ran
    code = ("import sys; from camfast.evaluation.safe_npy import load_npy\n"
            "try:\n    load_npy(sys.argv[1])\nexcept ValueError as e:\n    print(e); sys.exit(2)\n")
    res = subprocess.run([sys.executable, "-c", code, str(bad)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "refused" in res.stdout and not marker.exists()
    # other globals are refused as well; what np.save writes for plain arrays and dicts is read
    _crafted_npy(bad, {"x": __import__("collections").Counter("ab")})
    with pytest.raises(UnsafeFile, match="collections.Counter"):
        load_npy(bad)
    np.save(bad, {"a": np.arange(3), "n": 3, "s": np.float32(2)})
    d = load_npy(bad)
    assert d["n"] == 3 and d["a"].tolist() == [0, 1, 2] and d["s"] == 2
    bad.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match="2007_000032.npy"):
        load_npy(bad)


def _cls_labels(path: Path, classes: dict[str, tuple[int, ...]], int_keys: bool = True) -> None:
    """IRN's voc12/cls_labels.npy: {int(id without '_') or id: float32 multi-hot (20,)}."""
    d = {}
    for i, ks in classes.items():
        v = np.zeros(20, np.float32)
        v[list(ks)] = 1
        d[np.int32(int(i.replace("_", ""))) if int_keys else i] = v
    np.save(path, d)


def test_cls_labels_npy_in_the_voc_loader_and_the_readers(folders, tmp_path):
    cls = tmp_path / "cls_labels.npy"
    _cls_labels(cls, folders["classes"])
    got = read_cls_labels_npy(cls)
    assert got == {i: tuple(ks) for i, ks in folders["classes"].items()}
    _cls_labels(tmp_path / "str.npy", folders["classes"], int_keys=False)
    assert read_class_labels(tmp_path / "str.npy") == got
    # the text format gives the same
    text = tmp_path / "cls.txt"
    text.write_text("# id classes\n" + "".join(f"{i} {' '.join(map(str, ks))}\n"
                                                 for i, ks in folders["classes"].items() if ks)
                    + f"{IDS[1]}x dog\n")
    assert {k: v for k, v in read_class_labels(text).items() if k in got} == {k: v for k, v in got.items() if v}
    assert read_class_labels(text)[f"{IDS[1]}x"] == (11,)
    (tmp_path / "bad.txt").write_text(f"{IDS[0]} unicorn\n")
    with pytest.raises(ValueError, match=r"bad\.txt:1: unknown class 'unicorn'"):
        read_class_labels(tmp_path / "bad.txt")
    np.save(tmp_path / "short.npy", {IDS[0]: np.ones(3, np.float32)})
    with pytest.raises(ValueError, match=r"short\.npy: 2007_000032: expected a 20-dim 0/1 vector"):
        read_cls_labels_npy(tmp_path / "short.npy")
    # the VOC loader: labels from the file instead of the masks
    root = tmp_path / "VOC2012"
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(IDS) + "\n")
    os.symlink(folders["gt"], root / "SegmentationClass")
    for i in IDS:
        h, w = np.array(Image.open(folders["gt"] / f"{i}.png")).shape
        (root / "JPEGImages").mkdir(exist_ok=True)
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(root / "JPEGImages" / f"{i}.jpg")
    for source in (cls, text):
        if source == text:
            text.write_text("".join(f"{i} {' '.join(map(str, ks))}\n" for i, ks in folders["classes"].items() if ks)
                            + f"{IDS[3]}\t\n".replace("\t\n", " 0\n"))
        ds = VOCSegmentation(root, "train", boxes="none", class_labels=source)
        for j, i in enumerate(IDS):
            want = folders["classes"][i] if (source == cls or folders["classes"][i]) else (0,)
            assert ds[j]["labels"].tolist() == list(want), (source, i)
    _cls_labels(cls, {i: ks for i, ks in folders["classes"].items() if i != IDS[2]})
    with pytest.raises(ValueError, match=rf"class_labels: .*cls_labels.npy has no entry for 1 .*{IDS[2]}"):
        VOCSegmentation(root, "train", boxes="none", class_labels=cls)
    # a crafted cls_labels.npy is refused by the loader too
    _Evil.marker = tmp_path / "pwned"
    _crafted_npy(cls, {IDS[0]: _Evil()})
    with pytest.raises(UnsafeFile, match="cls_labels.npy"):
        VOCSegmentation(root, "train", boxes="none", class_labels=cls)
    assert not (tmp_path / "pwned").exists()


def test_pseudo_label_labels_from_cls_labels_npy(tmp_path):
    """``camfast pseudo-label --labels cls_labels.npy``: the same files as the text labels."""
    images = tmp_path / "JPEGImages"
    images.mkdir()
    rng = np.random.default_rng(1)
    classes = {IDS[0]: (0, 2), IDS[1]: (4,)}
    for i in IDS[:2]:
        Image.fromarray(rng.integers(0, 255, (24, 30, 3), dtype=np.uint8)).save(images / f"{i}.jpg")
    Image.fromarray(rng.integers(0, 255, (24, 30, 3), dtype=np.uint8)).save(images / "other.jpg")
    cls = tmp_path / "cls_labels.npy"
    _cls_labels(cls, {**classes, "2010_000005": (1,)})
    text = tmp_path / "labels.txt"
    text.write_text("".join(f"{i}.jpg {' '.join(map(str, ks))}\n" for i, ks in classes.items()))
    tests = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(tests))
    try:
        outs = []
        for labels in (cls, text):
            out = tmp_path / f"out-{labels.suffix}"
            rc = cli_main(["pseudo-label", "--images", str(images), "--out", str(out), "--labels", str(labels),
                           "--model", "pseudo_label_models:tiny", "--size", "32", "--progress", "none"])
            assert rc == 0
            outs.append({p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.png"))})
    finally:
        sys.path.remove(str(tests))
    assert outs[0] == outs[1] and f"heatmaps/{IDS[0]}_c2.png" in outs[0] and len(outs[0]) == 5
    s = json.loads((tmp_path / "out-.npy" / "summary.json").read_text())
    assert s["unlabelled"] == 1 and s["written"] == 2


def test_irn_files_with_torch_tensors_as_irn_writes_them(folders, tmp_path):
    """IRN's make_cam.py saves {"keys": valid_cat (a tensor), "cam": strided_cam.cpu() (a tensor),
    "high_res": an array}: read (storages by torch.load(weights_only=True)), scored the same."""
    torch = pytest.importorskip("torch")
    irn_t = tmp_path / "irn-tensors"
    irn_t.mkdir()
    for i in IDS:
        d = np.load(folders["irn"] / f"{i}.npy", allow_pickle=True).item()  # written by the fixture
        np.save(irn_t / f"{i}.npy", {"keys": torch.from_numpy(d["keys"]), "cam": torch.from_numpy(d["cam"]),
                                     "high_res": d["high_res"]})
    a = P.evaluate_folder(folders["irn"], folders["gt"], progress="none")
    b = P.evaluate_folder(irn_t, folders["gt"], progress="none")
    np.testing.assert_array_equal(a.confusion, b.confusion)
    d = load_npy(irn_t / f"{IDS[0]}.npy")
    assert isinstance(d["cam"], torch.Tensor) and d["keys"].tolist() == [0, 14]
