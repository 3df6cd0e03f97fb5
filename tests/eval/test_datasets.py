"""camfast.evaluation.datasets: the real layouts on tiny fixture folders written here, and SyntheticWSOL."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from camfast.evaluation import datasets
from camfast.evaluation.datasets import CUB, ImageNetVal, SyntheticWSOL, VOCSegmentation, WSOLEvalMetadata, collate

Image = pytest.importorskip("PIL.Image")

KEYS = {"image", "label", "labels", "boxes", "box_labels", "mask", "ignore", "segmentation", "name"}


def _rgb(path: Path, h: int, w: int, seed: int) -> np.ndarray:
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    Image.fromarray(arr).save(path, format=fmt, quality=100)
    return arr


def _palette_png(path: Path, arr: np.ndarray) -> None:
    im = Image.fromarray(arr.astype(np.uint8), mode="P")
    im.putpalette([v for i in range(256) for v in (i, (i * 7) % 256, (i * 13) % 256)])
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def _grey_png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8), mode="L").save(path)


def _check_format(s: dict) -> None:
    assert set(s) == KEYS
    img = s["image"]
    assert img.dtype == torch.float32 and img.dim() == 3 and img.shape[0] == 3
    assert float(img.min()) >= 0 and float(img.max()) <= 1
    assert isinstance(s["label"], int)
    assert s["labels"].dtype == torch.int64 and s["labels"].dim() == 1
    assert s["boxes"].dtype == torch.int64 and s["boxes"].shape[1:] == (4,)
    assert s["box_labels"].dtype == torch.int64 and s["box_labels"].shape == (s["boxes"].shape[0],)
    h, w = img.shape[1:]
    if s["boxes"].numel():
        b = s["boxes"]
        assert bool((b[:, 0] <= b[:, 2]).all() and (b[:, 1] <= b[:, 3]).all())
        assert int(b.min()) >= 0 and int(b[:, 2].max()) < w and int(b[:, 3].max()) < h
    for key, dtype in (("mask", torch.bool), ("ignore", torch.bool), ("segmentation", torch.int64)):
        if s[key] is not None:
            assert s[key].dtype == dtype and s[key].shape == (h, w)
    assert isinstance(s["name"], str)


# ----------------------------------------------------------------------------- VOC

def _voc_xml(objects: list[tuple[str, tuple[int, int, int, int]]]) -> str:
    body = "".join(
        f"  <object>\n    <name>{n}</name>\n    <bndbox>\n      <xmin>{b[0]}</xmin>\n      <ymin>{b[1]}</ymin>\n"
        f"      <xmax>{b[2]}</xmax>\n      <ymax>{b[3]}</ymax>\n    </bndbox>\n  </object>\n" for n, b in objects)
    return f"<annotation>\n  <filename>x.jpg</filename>\n{body}</annotation>\n"


@pytest.fixture
def voc(tmp_path: Path) -> dict:
    root = tmp_path / "VOC2012"
    segs = {}
    # image a: an aeroplane (1) and two persons (15), a boundary (255)
    seg_a = np.zeros((12, 16), np.uint8)
    seg_a[2:6, 1:5] = 1
    seg_a[7:10, 8:11] = 15
    seg_a[1:4, 12:15] = 15
    seg_a[6, :] = 255
    obj_a = np.zeros_like(seg_a)
    obj_a[2:6, 1:5] = 1
    obj_a[7:10, 8:11] = 2
    obj_a[1:4, 12:15] = 3
    obj_a[6, :] = 255
    # image b: only a dog (12), no object PNG; image c: background only
    seg_b = np.zeros((10, 14), np.uint8)
    seg_b[3:8, 2:12] = 12
    seg_c = np.zeros((8, 8), np.uint8)
    for name, seg in (("a", seg_a), ("b", seg_b), ("c", seg_c)):
        _rgb(root / "JPEGImages" / f"{name}.jpg", *seg.shape, seed=ord(name))
        _palette_png(root / "SegmentationClass" / f"{name}.png", seg)
        segs[name] = seg
    _palette_png(root / "SegmentationObject" / "a.png", obj_a)
    (root / "Annotations").mkdir(parents=True)
    (root / "Annotations" / "b.xml").write_text(_voc_xml([("dog", (3, 4, 12, 8))]))
    (root / "Annotations" / "c.xml").write_text(_voc_xml([("cat", (1, 1, 8, 8)), ("person", (2, 3, 4, 5))]))
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("a\nb\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("c\n")
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("b\nc\n")
    return {"root": root, "segs": segs}


def test_voc_segmentation_values(voc):
    ds = VOCSegmentation(voc["root"], "train")
    assert len(ds) == 2 and ds.num_classes == 20 and ds.class_names[14] == "person"
    a, b = ds[0], ds[1]
    for s in (a, b):
        _check_format(s)
    assert a["name"] == "a" and a["image"].shape == (3, 12, 16)
    assert torch.equal(a["segmentation"], torch.from_numpy(voc["segs"]["a"].astype(np.int64)))
    assert a["labels"].tolist() == [0, 14]
    seg = voc["segs"]["a"]
    assert (seg == 15).sum() == 18 and (seg == 1).sum() == 16
    assert a["label"] == 14                       # the class with the most pixels
    assert torch.equal(a["mask"], torch.from_numpy((seg >= 1) & (seg <= 20)))
    assert torch.equal(a["ignore"], torch.from_numpy(seg == 255))
    # boxes from SegmentationObject, in instance order
    assert a["boxes"].tolist() == [[1, 2, 4, 5], [8, 7, 10, 9], [12, 1, 14, 3]]
    assert a["box_labels"].tolist() == [0, 14, 14]
    # image b: no object PNG -> its XML (1-based, minus 1)
    assert b["labels"].tolist() == [11] and b["label"] == 11
    assert b["boxes"].tolist() == [[2, 3, 11, 7]] and b["box_labels"].tolist() == [11]
    c = VOCSegmentation(voc["root"], "val", boxes="none")[0]
    assert c["labels"].tolist() == [] and c["label"] == -1 and c["boxes"].shape == (0, 4)
    assert not bool(c["mask"].any())


def test_voc_main_and_resize(voc):
    ds = VOCSegmentation(voc["root"], "trainval", image_set="Main")
    c = ds[1]
    _check_format(c)
    assert c["labels"].tolist() == [7, 14] and c["label"] == 7
    assert c["boxes"].tolist() == [[0, 0, 7, 7], [1, 2, 3, 4]] and c["box_labels"].tolist() == [7, 14]
    assert c["mask"] is None and c["segmentation"] is None
    r = VOCSegmentation(voc["root"], "train", resize=(24, 32))[0]
    _check_format(r)
    assert r["image"].shape == (3, 24, 32) and r["segmentation"].shape == (24, 32)
    # pixel edges scaled by 2: x0 -> 2 x0, x1 -> 2 (x1 + 1) - 1
    assert r["boxes"].tolist() == [[2, 4, 9, 11], [16, 14, 21, 19], [24, 2, 29, 7]]
    assert torch.equal(r["segmentation"][::2, ::2], torch.from_numpy(voc["segs"]["a"].astype(np.int64)))
    t = VOCSegmentation(voc["root"], "train", transform=lambda x: x * 2 - 1)[1]
    assert float(t["image"].min()) < 0


def test_voc_errors(voc):
    root = voc["root"]
    with pytest.raises(FileNotFoundError, match="test.txt"):
        VOCSegmentation(root, "test")
    with pytest.raises(ValueError, match="image_set"):
        VOCSegmentation(root, "train", image_set="Layout")
    with pytest.raises(ValueError, match="boxes"):
        VOCSegmentation(root, "train", boxes="yes")
    (root / "ImageSets" / "Segmentation" / "bad.txt").write_text("a\nb c d\n")
    with pytest.raises(ValueError, match=r"bad\.txt:2"):
        VOCSegmentation(root, "bad")
    (root / "ImageSets" / "Segmentation" / "miss.txt").write_text("a\nzz\n")
    with pytest.raises(FileNotFoundError, match=r"zz\.jpg"):
        VOCSegmentation(root, "miss")
    (root / "SegmentationClass" / "b.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"b\.png"):
        VOCSegmentation(root, "train")
    # malformed XML: the line of the error; unknown class: the line of its <object>
    (root / "Annotations" / "c.xml").write_text("<annotation>\n  <object>\n    <name>cat</name>\n  </oops>\n")
    with pytest.raises(ValueError, match=r"c\.xml:4"):
        VOCSegmentation(root, "trainval", image_set="Main")[1]
    (root / "Annotations" / "c.xml").write_text(_voc_xml([("cat", (1, 1, 8, 8)), ("unicorn", (2, 3, 4, 5))]))
    with pytest.raises(ValueError, match=r"c\.xml:12: unknown VOC class 'unicorn'"):
        VOCSegmentation(root, "trainval", image_set="Main")[1]
    seg = voc["segs"]["c"].copy()
    seg[0, 0] = 40
    _palette_png(root / "SegmentationClass" / "c.png", seg)
    with pytest.raises(ValueError, match=r"c\.png.*0\.\.20"):
        VOCSegmentation(root, "val")[0]
    with pytest.raises(TypeError, match="root"):
        VOCSegmentation(3, "train")


# ----------------------------------------------------------------------------- CUB

@pytest.fixture
def cub(tmp_path: Path) -> Path:
    root = tmp_path / "CUB_200_2011"
    paths = ["001.Albatross/a_1.jpg", "001.Albatross/a_2.jpg", "002.Auklet/b_1.jpg"]
    for k, p in enumerate(paths):
        _rgb(root / "images" / p, 10, 12, seed=k)
        m = np.zeros((10, 12), np.uint8)
        m[2:7, 3:9] = 255
        m[2, 3] = 100       # a pixel marked by fewer than half of the annotators
        _grey_png(root / "segmentations" / p.replace(".jpg", ".png"), m)
    (root / "images.txt").write_text("".join(f"{i + 1} {p}\n" for i, p in enumerate(paths)))
    (root / "image_class_labels.txt").write_text("1 1\n2 1\n3 2\n")
    (root / "train_test_split.txt").write_text("1 1\n2 0\n3 1\n")
    (root / "bounding_boxes.txt").write_text("1 2.0 3.0 5.0 4.0\n2 1.5 0.0 3.2 20.0\n3 0.0 0.0 12.0 10.0\n")
    (root / "classes.txt").write_text("1 001.Albatross\n2 002.Auklet\n")
    return root


def test_cub_values(cub):
    train = CUB(cub, "train")
    assert len(train) == 2 and train.num_classes == 2 and train.class_names == ("001.Albatross", "002.Auklet")
    s0, s1 = train[0], train[1]
    for s in (s0, s1):
        _check_format(s)
    assert s0["name"] == "001.Albatross/a_1.jpg" and s0["label"] == 0 and s0["labels"].tolist() == [0]
    assert s0["boxes"].tolist() == [[2, 3, 6, 6]]          # x + w - 1, y + h - 1
    assert s1["label"] == 1 and s1["boxes"].tolist() == [[0, 0, 11, 9]]
    expected = torch.zeros(10, 12, dtype=torch.bool)
    expected[2:7, 3:9] = True
    expected[2, 3] = False
    assert torch.equal(s0["mask"], expected)
    assert torch.equal(s0["segmentation"], expected.long())
    test = CUB(cub, "test")
    t = test[0]
    assert len(test) == 1 and t["label"] == 0
    assert t["boxes"].tolist() == [[1, 0, 4, 9]]           # floor(1.5), ceil(4.7) - 1; clipped to the image
    assert CUB(cub, "train", segmentations=False)[0]["mask"] is None


def test_cub_errors(cub):
    with pytest.raises(ValueError, match="split"):
        CUB(cub, "val")
    (cub / "bounding_boxes.txt").write_text("1 2.0 3.0 5.0 4.0\n2 1.5 zero 3.2 20.0\n3 0 0 1 1\n")
    with pytest.raises(ValueError, match=r"bounding_boxes\.txt:2"):
        CUB(cub, "train")
    (cub / "bounding_boxes.txt").write_text("1 2.0 3.0 5.0 4.0\n3 0 0 1 1\n")
    with pytest.raises(ValueError, match=r"bounding_boxes\.txt.*image id 2"):
        CUB(cub, "train")
    (cub / "bounding_boxes.txt").write_text("1 2.0 3.0 5.0 4.0\n2 0 0 1 1\n3 0 0 1 1\n")
    (cub / "image_class_labels.txt").write_text("1 1\n2 1\n3 7\n")
    with pytest.raises(ValueError, match=r"image_class_labels\.txt:3.*class id 7"):
        CUB(cub, "train")
    (cub / "classes.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"classes\.txt"):
        CUB(cub, "train")


# ----------------------------------------------------------------------------- ImageNet

@pytest.fixture
def imagenet(tmp_path: Path) -> Path:
    root = tmp_path / "ILSVRC"
    img, ann = root / "Data" / "CLS-LOC" / "val", root / "Annotations" / "CLS-LOC" / "val"
    ann.mkdir(parents=True)
    _rgb(img / "ILSVRC2012_val_00000001.JPEG", 9, 11, seed=1)
    _rgb(img / "ILSVRC2012_val_00000002.JPEG", 8, 8, seed=2)
    (ann / "ILSVRC2012_val_00000001.xml").write_text(
        _voc_xml([("n01751748", (1, 2, 6, 7)), ("n01751748", (0, 0, 20, 3))]))
    (ann / "ILSVRC2012_val_00000002.xml").write_text(_voc_xml([("n01440764", (2, 2, 5, 6))]))
    return root


def test_imagenet_values(imagenet):
    ds = ImageNetVal(imagenet)
    assert len(ds) == 2 and ds.wnids == ("n01440764", "n01751748")      # sorted wnids found
    s = ds[0]
    _check_format(s)
    assert s["name"] == "ILSVRC2012_val_00000001" and s["label"] == 1 and s["labels"].tolist() == [1]
    assert s["boxes"].tolist() == [[1, 2, 6, 7], [0, 0, 10, 3]] and s["box_labels"].tolist() == [1, 1]
    assert ImageNetVal(imagenet, one_based=True)[1]["boxes"].tolist() == [[1, 1, 4, 5]]
    (imagenet / "LOC_synset_mapping.txt").write_text("n00000001 thing\nn01751748 sea snake\nn01440764 tench, Tinca\n")
    ds = ImageNetVal(imagenet)
    assert ds.num_classes == 3 and ds.class_names[1] == "sea snake"
    assert ds[0]["label"] == 1 and ds[1]["label"] == 2


def test_imagenet_errors(imagenet):
    ann = imagenet / "Annotations" / "CLS-LOC" / "val" / "ILSVRC2012_val_00000002.xml"
    ann.write_text(_voc_xml([("n01440764", (2, 2, 5, 6))]).replace("      <ymax>6</ymax>\n", ""))
    with pytest.raises(ValueError, match=r"00000002\.xml:5: <bndbox> has no <ymax>"):
        ImageNetVal(imagenet)
    ann.write_text(_voc_xml([("n01440764", (2, 2, 5, 6))]))
    with pytest.raises(ValueError, match=r"00000002\.xml:3: wnid 'n01440764' is not in the class list"):
        ImageNetVal(imagenet, wnids=["n01751748"])
    (imagenet / "Data" / "CLS-LOC" / "val" / "ILSVRC2012_val_00000001.JPEG").unlink()
    with pytest.raises(FileNotFoundError, match=r"ILSVRC2012_val_00000001\.JPEG"):
        ImageNetVal(imagenet)
    with pytest.raises(FileNotFoundError, match="tried"):
        ImageNetVal(imagenet / "Data")


# ----------------------------------------------------------------------------- wsolevaluation metadata

@pytest.fixture
def wsol(tmp_path: Path) -> dict:
    data, meta = tmp_path / "OpenImages", tmp_path / "metadata"
    d = meta / "OpenImages" / "test"
    d.mkdir(parents=True)
    _rgb(data / "test/c1/x.jpg", 10, 12, seed=3)
    _rgb(data / "test/c2/y.jpg", 6, 6, seed=4)
    m1 = np.zeros((10, 12), np.uint8); m1[1:4, 2:6] = 255
    m2 = np.zeros((10, 12), np.uint8); m2[6:9, 7:11] = 1
    ign = np.zeros((10, 12), np.uint8); ign[0:5, 0:8] = 255
    m3 = np.zeros((6, 6), np.uint8); m3[2:4, 1:5] = 255
    for name, arr in (("x_m1.png", m1), ("x_m2.png", m2), ("x_ignore.png", ign)):
        _grey_png(data / "test/c1" / name, arr)
    _grey_png(data / "test/c2/y_m1.png", m3)
    (d / "image_ids.txt").write_text("test/c1/x.jpg\ntest/c2/y.jpg\n")
    (d / "class_labels.txt").write_text("test/c1/x.jpg,0\ntest/c2/y.jpg,3\n")
    (d / "localization.txt").write_text(
        "test/c1/x.jpg,test/c1/x_m1.png,test/c1/x_ignore.png\ntest/c1/x.jpg,test/c1/x_m2.png,\n"
        "test/c2/y.jpg,test/c2/y_m1.png,\n")
    c = meta / "CUB" / "test"
    c.mkdir(parents=True)
    (c / "image_ids.txt").write_text("test/c1/x.jpg\n")
    (c / "class_labels.txt").write_text("test/c1/x.jpg,2\n")
    (c / "image_sizes.txt").write_text("test/c1/x.jpg,12,10\n")
    (c / "localization.txt").write_text("test/c1/x.jpg,1,2,5,6\ntest/c1/x.jpg,0,0,30,9\n")
    return {"data": data, "meta": meta, "m1": m1, "m2": m2, "ign": ign}


def test_wsol_openimages_values(wsol):
    ds = WSOLEvalMetadata(wsol["data"], wsol["meta"], "OpenImages", "test")
    assert len(ds) == 2 and ds.num_classes == 4
    s = ds[0]
    _check_format(s)
    mask = torch.from_numpy((wsol["m1"] > 0) | (wsol["m2"] > 0))
    assert torch.equal(s["mask"], mask)
    assert torch.equal(s["ignore"], torch.from_numpy(wsol["ign"] > 0) & ~mask)
    assert s["boxes"].tolist() == [[2, 1, 5, 3], [7, 6, 10, 8]] and s["box_labels"].tolist() == [0, 0]
    seg = mask.long()
    seg[s["ignore"]] = 255
    assert torch.equal(s["segmentation"], seg)
    y = ds[1]
    assert y["label"] == 3 and not bool(y["ignore"].any()) and y["segmentation"].max() == 4


def test_wsol_boxes_and_errors(wsol):
    ds = WSOLEvalMetadata(wsol["data"], wsol["meta"], "CUB", "test")
    s = ds[0]
    _check_format(s)
    assert s["label"] == 2 and s["mask"] is None and ds.sizes == {"test/c1/x.jpg": (12, 10)}
    assert s["boxes"].tolist() == [[1, 2, 5, 6], [0, 0, 11, 9]]
    loc = wsol["meta"] / "CUB" / "test" / "localization.txt"
    loc.write_text("test/c1/x.jpg,1,2,5,6\ntest/c1/x.jpg,0,0,9\n")
    with pytest.raises(ValueError, match=r"localization\.txt:2"):
        WSOLEvalMetadata(wsol["data"], wsol["meta"], "CUB", "test")
    labels = wsol["meta"] / "OpenImages" / "test" / "class_labels.txt"
    labels.write_text("test/c1/x.jpg,0\ntest/c2/y.jpg,three\n")
    with pytest.raises(ValueError, match=r"class_labels\.txt:2"):
        WSOLEvalMetadata(wsol["data"], wsol["meta"], "OpenImages", "test")
    labels.write_text("test/c1/x.jpg,0\ntest/c2/y.jpg,3\n")
    (wsol["data"] / "test/c1/x_m2.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"x_m2\.png"):
        WSOLEvalMetadata(wsol["data"], wsol["meta"], "OpenImages", "test")
    with pytest.raises(FileNotFoundError, match="val"):
        WSOLEvalMetadata(wsol["data"], wsol["meta"], "OpenImages", "val")
    with pytest.raises(ValueError, match="dataset"):
        WSOLEvalMetadata(wsol["data"], wsol["meta"], "COCO", "test")


# ----------------------------------------------------------------------------- SyntheticWSOL

@pytest.fixture(scope="module")
def syn() -> SyntheticWSOL:
    return SyntheticWSOL(400, size=64, seed=3)


def test_synthetic_determinism_and_splits():
    first = SyntheticWSOL(300, size=32, seed=3)
    again = SyntheticWSOL(300, size=32, seed=3)
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    assert torch.equal(first.instance_map, again.instance_map)
    assert all(torch.equal(a, b) for a, b in zip(first.boxes, again.boxes))
    prefix = SyntheticWSOL(260, size=32, seed=3)                        # a prefix across the 256 block
    assert torch.equal(prefix.images, first.images[:260])
    for ds in (SyntheticWSOL(300, size=32, seed=3, split="test"), SyntheticWSOL(300, size=32, seed=4)):
        assert (ds.images - first.images).abs().mean() > 0.05
        assert not torch.equal(ds.labels, first.labels)


def test_synthetic_format_and_consistency(syn):
    t = syn.tensors()
    n, s = 400, 64
    assert t["images"].shape == (n, 3, s, s) and t["images"].dtype == torch.float32
    assert float(t["images"].min()) >= 0 and float(t["images"].max()) <= 1
    assert t["labels"].shape == (n,) and set(t["labels"].tolist()) == set(range(syn.num_classes))
    assert t["masks"].shape == (n, s, s) and t["masks"].dtype == torch.bool
    for i in range(n):
        inst = syn.instance_masks(i)
        boxes = t["boxes"][i]
        assert inst.shape[0] == boxes.shape[0] >= 1
        assert torch.equal(inst.any(0), t["masks"][i])
        for m, b in zip(inst, boxes):
            ys, xs = m.nonzero(as_tuple=True)
            assert b.tolist() == [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]
        part = syn.part_mask(i)
        assert bool(part.any()) and not bool((part & ~t["masks"][i]).any())
    s0 = syn[5]
    _check_format(s0)
    assert s0["labels"].tolist() == [s0["label"]] and torch.equal(s0["segmentation"] > 0, s0["mask"])
    assert s0["segmentation"].max() == s0["label"] + 1
    r = SyntheticWSOL(4, size=64, seed=3, resize=32)[1]
    _check_format(r)
    assert r["image"].shape == (3, 32, 32)


def test_synthetic_has_the_seeds_cases(syn):
    counts = torch.tensor([b.shape[0] for b in syn.boxes])
    area = syn.masks.flatten(1).sum(1).float() / 64 ** 2
    single = counts == 1
    assert 0.1 < float((counts >= 2).float().mean()) < 0.35            # several instances (p_multi=0.2)
    assert bool((counts == 3).any())
    small = single & (area < 0.05)
    assert 0.07 < float(small.float().mean()) < 0.25                    # small objects (p_small=0.15)
    large = single & (area > 0.15)
    assert float(large.float().mean()) > 0.55
    # the part is small next to the object
    part_share = syn.parts.flatten(1).sum(1).float() / syn.masks.flatten(1).sum(1).float()
    assert float(part_share[large].median()) < 0.2
    # the objects cross the 2x2 puzzle grid: the masks of most images meet 3 or 4 tiles
    m = syn.masks.reshape(-1, 2, 32, 2, 32).any(4).any(2)              # (N, 2, 2)
    tiles = m.flatten(1).sum(1)
    assert float((tiles >= 3).float().mean()) > 0.6
    assert bool((tiles[large] == 4).all())
    assert float((tiles >= 2).float().mean()) > 0.8
    # the objects have sharp edges: the image jumps across the mask boundary
    img = syn.images.mean(1)
    edge = syn.masks[:, :, 1:] != syn.masks[:, :, :-1]
    jump = (img[:, :, 1:] - img[:, :, :-1]).abs()
    assert float(jump[edge].mean()) > 2 * float(jump[~edge].mean())


def _part_class(ds: SyntheticWSOL) -> torch.Tensor:
    col = (ds.images * ds.parts[:, None]).sum((2, 3)) / ds.parts[:, None].sum((2, 3))
    return torch.cdist(col, ds.part_colours).argmin(1)


def _body_class(ds: SyntheticWSOL) -> torch.Tensor:
    """The class whose grating orientation has the most energy in the body (part excluded)."""
    s, k = ds.size, ds.num_classes
    body = (ds.masks & ~ds.parts).float()
    grey = ds.images.mean(1)
    mean = (grey * body).sum((1, 2)) / body.sum((1, 2))
    x = (grey - mean[:, None, None]) * body
    c = torch.arange(s, dtype=torch.float32) + 0.5
    energies = []
    for cls in range(k):
        a = math.pi * cls / k
        ph = 2 * math.pi / 5 * (c[None, :] * math.cos(a) + c[:, None] * math.sin(a))
        energies.append((x * torch.cos(ph)).sum((1, 2)) ** 2 + (x * torch.sin(ph)).sum((1, 2)) ** 2)
    return torch.stack(energies, 1).argmax(1)


def test_synthetic_class_evidence(syn):
    labels = syn.labels
    assert torch.equal(_part_class(syn), labels)                        # the part decides the class
    large = torch.tensor([b.shape[0] == 1 for b in syn.boxes]) & (syn.masks.flatten(1).sum(1) > 600)
    acc = float((_body_class(syn) == labels)[large].float().mean())
    assert acc > 0.9                                                    # the body carries real evidence
    flat = SyntheticWSOL(200, size=64, seed=3, body_evidence=0.0)
    large = torch.tensor([b.shape[0] == 1 for b in flat.boxes]) & (flat.masks.flatten(1).sum(1) > 600)
    assert float((_body_class(flat) == flat.labels)[large].float().mean()) < 0.5   # and none without it


def test_synthetic_arguments():
    with pytest.raises(ValueError, match="size"):
        SyntheticWSOL(4, size=16)
    with pytest.raises(TypeError, match="num_images"):
        SyntheticWSOL(4.0)
    with pytest.raises(ValueError, match="num_classes"):
        SyntheticWSOL(4, num_classes=1)
    with pytest.raises(ValueError, match="p_multi"):
        SyntheticWSOL(4, p_multi=0.7, p_small=0.5)
    with pytest.raises(ValueError, match="split"):
        SyntheticWSOL(4, split="dev")
    with pytest.raises(ValueError, match="clutter"):
        SyntheticWSOL(4, clutter=-1)
    assert len(SyntheticWSOL(0)) == 0
    ds = SyntheticWSOL(3)
    with pytest.raises(IndexError):
        ds[3]
    assert ds[-1]["name"] == ds[2]["name"]


# ----------------------------------------------------------------------------- collate

def test_collate_with_dataloader(voc):
    ds = SyntheticWSOL(10, size=32, seed=1)
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=collate)))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["mask"].shape == (4, 32, 32)
    assert torch.equal(batch["label"], ds.labels[:4]) and batch["ignore"] is None
    assert isinstance(batch["boxes"], list) and all(torch.equal(b, ds.boxes[i]) for i, b in enumerate(batch["boxes"]))
    targets = datasets.multi_hot(batch["labels"], ds.num_classes)
    assert targets.shape == (4, ds.num_classes) and torch.equal(targets.argmax(1), ds.labels[:4])
    vb = collate([VOCSegmentation(voc["root"], "train")[i] for i in range(2)])
    assert isinstance(vb["image"], list) and vb["name"] == ["a", "b"] and vb["label"].tolist() == [14, 11]
    with pytest.raises(ValueError, match="samples"):
        collate([])
