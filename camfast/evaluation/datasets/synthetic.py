"""A synthetic WSOL benchmark that runs on a CPU in minutes and shows the seeds' problems."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from camfast.evaluation.datasets import common as C

__all__ = ["SyntheticWSOL"]

_SPLITS = {"train": 0, "val": 1, "test": 2}
_CHUNK = 256          # images generated per random stream: a prefix of a set is the smaller set
_SLOTS = 3            # instances per image at most
_MAX_CLASSES = 12


def _hsv(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """HSV in [0, 1] to RGB ``(..., 3)``."""
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], -1)
    return v[..., None] - v[..., None] * s[..., None] * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def _stream_seed(seed: int, split: int, chunk: int) -> int:
    return (seed * 0x9E3779B97F4A7C15 + split * 0xC2B2AE3D27D4EB4F + chunk * 0x165667B19E3779F9 + 0x27D4EB2F) % (2 ** 63)


def _shape(xx: Tensor, yy: Tensor, cx: Tensor, cy: Tensor, a: Tensor, b: Tensor, theta: Tensor, power: Tensor,
           wobble: Tensor, lobes: Tensor, phase: Tensor, side: Tensor) -> tuple[Tensor, Tensor]:
    """Object and head masks ``(n, S, S)`` for ``n`` instances (parameters ``(n,)``, pixels).

    Object: ``(|u/a|^p + |v/b|^p)^(1/p) <= 1 + wobble * cos(lobes * atan2(v/b, u/a) + phase)``
    in the frame rotated by ``theta``; the outline never shrinks below 0.9 of the
    superellipse, so the object is never empty. Head: the disc of radius ``0.42 b`` centred at
    ``0.62 a`` along the major axis (``side`` picks the end), within the object.
    """
    e = lambda t: t[:, None, None]  # noqa: E731
    cos_t, sin_t = torch.cos(theta), torch.sin(theta)
    dx, dy = xx - e(cx), yy - e(cy)
    pu = (dx * e(cos_t) + dy * e(sin_t)) / e(a)
    pv = (dy * e(cos_t) - dx * e(sin_t)) / e(b)
    pw = e(power)
    level = pu.abs().pow(pw) + pv.abs().pow(pw)
    outline = 1 + e(wobble) * torch.cos(e(lobes) * torch.atan2(pv, pu) + e(phase))
    obj = level <= outline.pow(pw)
    hx = cx + side * 0.62 * a * cos_t
    hy = cy + side * 0.62 * a * sin_t
    hr = torch.clamp(0.42 * b, min=1.6)
    head = ((xx - e(hx)) ** 2 + (yy - e(hy)) ** 2 <= e(hr) ** 2) & obj
    return obj, head


class SyntheticWSOL(Dataset):
    """Deterministic images with pixel masks and boxes, built to show the seeds' problems.

    Each image holds objects of one class (the image's ``label``):

    * **a large object** (most images): a superellipse (ellipse to rounded rectangle) with a
      wavy, polygon-like outline, a sharp (binary) boundary, rotated at random, centred within
      ``0.08 S`` of the image centre and ``0.36..0.72 S`` long, so it crosses both lines of the
      2x2 puzzle grid (Puzzle-CAM) and its body lies in several tiles;
    * **the discriminative part** ("head"): a disc at one end of the major axis, about 10% of
      the object, filled with the class colour (``num_classes`` hues, evenly spaced). It
      decides the class alone: a classifier that looks only at it wins, and its CAM covers
      only it (the partial-activation problem of CAM, which TAP, Puzzle-CAM and Zoom-CAM
      address);
    * **the body**: a neutral (grey-brown) colour for every class, carrying weaker but real
      class evidence: a low-contrast grating (amplitude ``body_evidence``) whose orientation
      is ``pi * label / num_classes``;
    * with probability ``p_small`` one **small object** (``0.16..0.24 S`` long) anywhere, with
      probability ``p_multi`` **2 or 3 instances** of the class, one per image quadrant
      (disjoint), the cases of Zoom-CAM and rCAM;
    * **textured clutter** (scaled by ``clutter``): a smooth colour field, a grating at a
      random orientation and frequency over the background, and up to 3 distractor blobs of
      random hue and texture; none of it depends on the class. The background is darker or
      brighter than the body, so object boundaries are sharp edges.

    ``mask`` covers the whole object(s), head included; one box per instance, the inclusive
    bounding box of its mask; ``segmentation`` is ``mask * (label + 1)``; ``ignore`` is None.
    :meth:`part_mask` gives the discriminative parts, :meth:`instance_masks` each instance.

    Determinism: the same arguments give bitwise the same data; the split and the seed select
    independent random streams (one per block of 256 images, so the first ``n`` images of a
    larger set are the set of ``n``). Everything is generated in the constructor, vectorised
    (2000 images of 64x64 in about a second on 2 cores); ``__getitem__`` only indexes.

    Args:
        num_images: number of images (>= 0).
        size: side ``S`` of the square images (>= 32).
        seed: any int.
        num_classes: ``2..12``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        p_multi: probability of an image with 2-3 instances.
        p_small: probability of an image with one small object (``p_multi + p_small <= 1``).
        clutter: strength of the background texture and distractors (0 = flat background).
        body_evidence: amplitude of the class grating on the body (0 = the head alone decides).
        resize, transform: as :class:`camfast.evaluation.datasets.VOCSegmentation` (applied per sample in
            ``__getitem__``; :meth:`tensors` returns the stored ``S x S`` data).

    Example:
        >>> ds = SyntheticWSOL(2000, size=64, seed=0)
        >>> t = ds.tensors()
        >>> t["images"].shape, t["labels"].shape, t["masks"].shape, len(t["boxes"])
        (torch.Size([2000, 3, 64, 64]), torch.Size([2000]), torch.Size([2000, 64, 64]), 2000)
    """

    def __init__(self, num_images: int, size: int = 64, seed: int = 0, num_classes: int = 6, split: str = "train",
                 *, p_multi: float = 0.2, p_small: float = 0.15, clutter: float = 1.0, body_evidence: float = 0.08,
                 resize: Any = None, transform: Callable | None = None) -> None:
        def as_int(name: str, v: object, lo: int, hi: int | None = None) -> int:
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{name} must be an int, got {type(v).__name__}")
            if v < lo or (hi is not None and v > hi):
                raise ValueError(f"{name} must be in [{lo}, {hi if hi is not None else 'inf'}], got {v}")
            return v

        def as_float(name: str, v: object, lo: float, hi: float | None) -> float:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"{name} must be a number, got {type(v).__name__}")
            if not math.isfinite(v) or v < lo or (hi is not None and v > hi):
                raise ValueError(f"{name} must be in [{lo}, {hi if hi is not None else 'inf'}], got {v}")
            return float(v)

        self.num_images = as_int("num_images", num_images, 0)
        self.size = as_int("size", size, 32)
        self.seed = as_int("seed", seed, -(2 ** 62), 2 ** 62)
        self.num_classes = as_int("num_classes", num_classes, 2, _MAX_CLASSES)
        self.split = C.check_choice("split", split, tuple(_SPLITS))
        self.p_multi = as_float("p_multi", p_multi, 0.0, 1.0)
        self.p_small = as_float("p_small", p_small, 0.0, 1.0)
        if self.p_multi + self.p_small > 1.0:
            raise ValueError(f"p_multi + p_small must be <= 1, got {self.p_multi} + {self.p_small}")
        self.clutter = as_float("clutter", clutter, 0.0, None)
        self.body_evidence = as_float("body_evidence", body_evidence, 0.0, 1.0)
        self.resize = C.check_resize(resize)
        self.transform = C.check_transform(transform)
        self.class_names = tuple(f"class{k}" for k in range(self.num_classes))
        hues = torch.arange(self.num_classes, dtype=torch.float64) / self.num_classes
        #: RGB ``(num_classes, 3)`` colour of each class's discriminative part.
        self.part_colours = _hsv(hues, torch.full_like(hues, 0.9), torch.full_like(hues, 0.95)).float()

        S, n = self.size, self.num_images
        images, labels, inst, part, boxes = [], [], [], [], []
        for chunk in range(-(-n // _CHUNK)):
            g = torch.Generator().manual_seed(_stream_seed(self.seed, _SPLITS[self.split], chunk))
            out = self._generate(g)
            take = min(_CHUNK, n - chunk * _CHUNK)
            images.append(out[0][:take]); labels.append(out[1][:take]); inst.append(out[2][:take])
            part.append(out[3][:take]); boxes.append(out[4][:take])
        if n == 0:
            images, labels = [torch.empty(0, 3, S, S)], [torch.empty(0, dtype=torch.int64)]
            inst, part, boxes = [torch.empty(0, S, S, dtype=torch.uint8)], [torch.empty(0, S, S, dtype=torch.bool)], \
                [torch.empty(0, _SLOTS, 4, dtype=torch.int64)]
        self.images = torch.cat(images)                 # (N, 3, S, S) float32 in [0, 1]
        self.labels = torch.cat(labels)                 # (N,) int64
        self.instance_map = torch.cat(inst)             # (N, S, S) uint8: 0 background, m + 1 instance m
        self.parts = torch.cat(part)                    # (N, S, S) bool: the discriminative parts
        self.masks = self.instance_map > 0              # (N, S, S) bool
        slot_boxes = torch.cat(boxes)                   # (N, SLOTS, 4), x0 = -1 for an absent slot
        self.boxes = [b[b[:, 0] >= 0].contiguous() for b in slot_boxes]

    # ------------------------------------------------------------------ generation
    def _generate(self, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        B, S, M, K = _CHUNK, self.size, _SLOTS, self.num_classes

        def U(*shape: int, lo: float = 0.0, hi: float = 1.0) -> Tensor:
            return lo + (hi - lo) * torch.rand(*shape, generator=g)

        coords = torch.arange(S, dtype=torch.float32) + 0.5
        yy, xx = coords[:, None].expand(S, S), coords[None, :].expand(S, S)
        labels = torch.randint(K, (B,), generator=g)

        # kind of image: 0 large, 1 small, 2 multi
        u = U(B)
        kind = torch.where(u < self.p_small, 1, torch.where(u < self.p_small + self.p_multi, 2, 0))
        count = torch.where(kind == 2, 2 + torch.randint(2, (B,), generator=g), 1)
        present = torch.arange(M)[None, :] < count[:, None]                       # (B, M)

        # instance geometry (B, M), in pixels
        quadrant = torch.argsort(U(B, 4), dim=1)[:, :M]                            # distinct quadrants
        qx = (quadrant % 2).float() * 0.5 + 0.25
        qy = (quadrant // 2).float() * 0.5 + 0.25
        a_large, a_small, a_multi = U(B, M, lo=0.28, hi=0.36), U(B, M, lo=0.08, hi=0.12), U(B, M, lo=0.14, hi=0.19)
        a = torch.where(kind[:, None] == 0, a_large, torch.where(kind[:, None] == 1, a_small, a_multi))
        ratio = torch.where(kind[:, None] == 0, U(B, M, lo=0.55, hi=0.78), U(B, M, lo=0.6, hi=0.85))
        b = a * ratio
        centre_large = 0.5 + U(B, M, 2, lo=-0.08, hi=0.08)
        lo_small = a_small + 0.02
        centre_small = lo_small[..., None] + U(B, M, 2) * (1 - 2 * lo_small[..., None])
        centre_multi = torch.stack([qx, qy], -1) + U(B, M, 2, lo=-0.04, hi=0.04)
        k3 = kind[:, None, None]
        centre = torch.where(k3 == 0, centre_large, torch.where(k3 == 1, centre_small, centre_multi))
        cx, cy = centre[..., 0] * S, centre[..., 1] * S
        a, b = a * S, b * S
        theta = U(B, M, hi=math.pi)
        power = torch.tensor([2.0, 3.0, 4.0])[torch.randint(3, (B, M), generator=g)]
        wobble = U(B, M, hi=0.1)
        lobes = torch.tensor([3.0, 5.0])[torch.randint(2, (B, M), generator=g)]
        phase = U(B, M, hi=2 * math.pi)

        # the masks of slot 0 for every image, of slots 1.. only where present (multi images)
        side = torch.where(U(B, M) < 0.5, -1.0, 1.0)
        inst = torch.zeros(B, M, S, S, dtype=torch.bool)
        head = torch.zeros(B, M, S, S, dtype=torch.bool)
        for m in range(M):
            sel = present[:, m].nonzero().reshape(-1)
            if sel.numel() == 0:
                continue
            p = [t[sel, m] for t in (cx, cy, a, b, theta, power, wobble, lobes, phase, side)]
            inst[sel, m], head[sel, m] = _shape(xx, yy, *p)
        # background: level on the other side of the body's, a tint, a smooth colour field
        clutter = self.clutter
        bg_level = torch.where(U(B) < 0.5, U(B, lo=0.12, hi=0.32), U(B, lo=0.72, hi=0.9))
        bg = bg_level[:, None, None, None] * (1 + U(B, 3, 1, 1, lo=-0.15, hi=0.15))
        smooth = F.interpolate(torch.randn(B, 3, 5, 5, generator=g), size=(S, S), mode="bicubic", align_corners=False)
        bg = bg + 0.07 * clutter * smooth
        beta = U(B, hi=math.pi)[:, None, None]
        freq = U(B, lo=1 / 9, hi=1 / 4)[:, None, None]
        grating = torch.sin(2 * math.pi * freq * (xx * torch.cos(beta) + yy * torch.sin(beta)) + U(B, 1, 1, hi=6.3))
        bg = bg + 0.06 * clutter * grating[:, None]
        # distractor blobs: random hue, moderate saturation, their own grating; under the objects
        D = 3
        d_on = U(B, D) < 0.6 * min(clutter, 1.0)
        d_r = U(B, D, lo=0.04, hi=0.08) * S
        d_x, d_y = U(B, D) * S, U(B, D) * S
        d_mask = ((xx - d_x[..., None, None]) ** 2 + (yy - d_y[..., None, None]) ** 2 <= d_r[..., None, None] ** 2)
        d_mask &= d_on[..., None, None]                                           # (B, D, S, S)
        d_col = _hsv(U(B, D), U(B, D, lo=0.3, hi=0.6), U(B, D, lo=0.35, hi=0.8)).float()   # (B, D, 3)
        d_ang = U(B, D, hi=math.pi)[..., None, None]
        d_tex = 0.08 * torch.sin(2 * math.pi / 4 * (xx * torch.cos(d_ang) + yy * torch.sin(d_ang)))
        for d in range(D):
            fill = d_col[:, d, :, None, None] + d_tex[:, d, None]
            bg = torch.where(d_mask[:, d, None], fill, bg)

        # body: neutral colour with the class grating at low contrast
        body_level = U(B, lo=0.45, hi=0.62)[:, None, None, None]
        body_tint = torch.tensor([1.0, 0.92, 0.8])[None, :, None, None] * (1 + U(B, 3, 1, 1, lo=-0.05, hi=0.05))
        alpha = (math.pi * labels.float() / K)[:, None, None]
        body_freq = 1 / 5
        body_tex = torch.sin(2 * math.pi * body_freq * (xx * torch.cos(alpha) + yy * torch.sin(alpha))
                             + U(B, 1, 1, hi=6.3))
        body = body_level * body_tint + self.body_evidence * body_tex[:, None]
        obj = inst.any(1)                                                        # (B, S, S)
        img = torch.where(obj[:, None], body, bg)
        # head: the class colour, slightly jittered in brightness
        parts = head.any(1)
        head_col = self.part_colours[labels] * U(B, 1, lo=0.85, hi=1.0)         # (B, 3)
        img = torch.where(parts[:, None], head_col[:, :, None, None].expand(B, 3, S, S), img)
        img = img + 0.02 * torch.randn(B, 3, S, S, generator=g)
        img = img.clamp_(0.0, 1.0)

        # instance map and boxes from the instance masks
        imap = torch.zeros(B, S, S, dtype=torch.uint8)
        for m in range(M):
            imap[inst[:, m]] = m + 1
        inst = torch.stack([imap == m + 1 for m in range(M)], 1)
        cols, rows = inst.any(2), inst.any(3)                                    # (B, M, S)
        idx = torch.arange(S)
        big = S + 1
        x0 = torch.where(cols, idx, big).amin(-1)
        x1 = torch.where(cols, idx, -1).amax(-1)
        y0 = torch.where(rows, idx, big).amin(-1)
        y1 = torch.where(rows, idx, -1).amax(-1)
        boxes = torch.stack([x0, y0, x1, y1], -1)
        boxes[~inst.flatten(2).any(-1)] = -1
        return img.float(), labels, imap, parts, boxes

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = C.check_index(index, len(self))
        label = int(self.labels[i])
        mask = self.masks[i]
        boxes = self.boxes[i]
        sample = {
            "image": self.images[i], "label": label, "labels": self.labels[i:i + 1].clone(), "boxes": boxes.clone(),
            "box_labels": torch.full((boxes.shape[0],), label, dtype=torch.int64), "mask": mask,
            "ignore": None, "segmentation": mask.to(torch.int64) * (label + 1),
            "name": f"synthetic/{self.split}/{i:06d}",
        }
        return C.finish_sample(sample, self.resize, self.transform)

    def instance_masks(self, index: int) -> Tensor:
        """``(n, S, S)`` bool: one mask per instance of image ``index``, in the order of its boxes."""
        i = C.check_index(index, len(self))
        ids = [m for m in range(1, _SLOTS + 1) if bool((self.instance_map[i] == m).any())]
        return torch.stack([self.instance_map[i] == m for m in ids]) if ids else torch.zeros(0, self.size, self.size,
                                                                                            dtype=torch.bool)

    def part_mask(self, index: int) -> Tensor:
        """``(S, S)`` bool: the discriminative parts (heads) of image ``index``."""
        return self.parts[C.check_index(index, len(self))]

    def tensors(self) -> dict[str, Any]:
        """Everything batched, for training loops: ``images (N, 3, S, S)`` float32 in [0, 1],
        ``labels (N,)`` int64, ``masks (N, S, S)`` bool, ``parts (N, S, S)`` bool, ``boxes``
        (a list of ``(n_i, 4)`` inclusive boxes) and ``instance_map (N, S, S)`` uint8
        (0 background, ``m + 1`` the ``m``-th instance). The stored tensors, not copies."""
        return {"images": self.images, "labels": self.labels, "masks": self.masks, "parts": self.parts,
                "boxes": self.boxes, "instance_map": self.instance_map}
