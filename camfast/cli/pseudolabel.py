"""Pseudo-labels for a folder of images: CAM heatmaps and label maps, resumable and sharded.

The library behind ``camfast pseudo-label`` (:mod:`camfast.cli.pseudo_label`):

1. :func:`find_images` walks the image folder (sorted, recursive) and names every image by
   its path relative to the root (``a/b/img.jpg``);
2. a ``torch.utils.data.DataLoader`` (``workers`` processes) decodes each image with Pillow
   (EXIF orientation applied, converted to RGB) and resizes it bilinearly to ``size x size``;
   an unreadable or corrupt file becomes an error record, never an exception, so the run
   goes on;
3. the model's ``preprocess`` and the CAM method run on the batch; each map is upsampled
   bilinearly (``align_corners=False``) to the image's ORIGINAL size;
4. the outputs are written atomically (a temporary file in the same folder, then
   ``os.replace``): an interrupted run leaves no partial file, and a rerun skips every
   image whose outputs all exist.

Output layout (``<stem>`` is the relative path without its suffix, ``a/b/img``)::

    OUT/heatmaps/<stem>.png          top-1 class map, 16-bit grayscale, round(cam * 65535)
    OUT/heatmaps/<stem>_c<k>.png     with labels: one 16-bit map per listed class k
    OUT/heatmaps/<stem>.npy          format="npy": float16 (H, W) for the top-1 class,
                                     (K, H, W) with labels (classes in ascending order)
    OUT/labels/<stem>.png            label map (with labels, or a threshold): 8-bit palette
                                     PNG with the PASCAL VOC colours, 0 = background,
                                     class k -> k + 1 (16-bit grayscale when the model has
                                     more than 255 classes)
    OUT/summary.json                 counts, failures, images/s and settings of the run

Label map: per pixel, the argmax over ``[threshold, cam_k1, cam_k2, ...]`` (the background
score is the constant ``threshold``; ties go to the background), as IRN / Puzzle-CAM turn
CAMs into pseudo-labels; with labels the default threshold is 0.15 (IRN's
``cam_eval_thres``). With ``crf=True`` those scores, divided by their sum per pixel, are
refined by :func:`camfast.crf.refine` on the original image before the argmax (``rcam``
uses its own CRF instead).

Batches are fixed blocks of ``batch_size`` consecutive images of the sorted list (images
already done, or without labels, are left out of their block). Distributed: when
``WORLD_SIZE > 1`` (``torchrun``) rank ``r`` takes the blocks ``b`` with
``b % world_size == r`` and writes only their images; counts and failures are gathered for
the summary, written by rank 0. Every image therefore meets the same batch-mates whatever
the number of processes, and N processes write the same bytes as one (at the same torch
thread count: float32 sums may round differently with other thread counts or batches).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from camfast.methods import registry
from camfast.utils.io import atomic_path

__all__ = [
    "EXIT_FAILED_IMAGES", "IMAGE_EXTENSIONS", "METHODS", "PseudoLabelConfig", "Summary", "UsageError", "find_images",
    "label_map", "output_paths", "parse_labels", "run_pseudo_label", "voc_palette",
]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm",
                              ".pbm", ".pnm"})
#: every registered method (camfast.methods.registry), in its order
METHODS = tuple(registry.names())
FORMATS = ("png", "npy")
#: exit status of a run in which at least one image could not be read (the others are written)
EXIT_FAILED_IMAGES = 3
#: temporary files start with this; a rerun removes any left by a killed run
TMP_PREFIX = ".camfast-tmp-"
#: background threshold with labels when none is given (IRN's ``cam_eval_thres``)
DEFAULT_LABELS_THRESHOLD = 0.15


# ------------------------------------------------------------------------------ palette
def voc_palette() -> list[int]:
    """The PASCAL VOC colour map: 256 RGB triples, flattened (768 ints).

    Colour ``i`` spreads the bits of ``i`` over the channels: bit ``3j`` goes to red, ``3j+1``
    to green, ``3j+2`` to blue, each at position ``7 - j`` (0 black, 1 dark red, 2 dark green,
    ..., 255 is the same rule, not VOC's "void" white).
    """
    out = []
    for i in range(256):
        rgb = [0, 0, 0]
        c = i
        for j in range(8):
            for ch in range(3):
                rgb[ch] |= ((c >> ch) & 1) << (7 - j)
            c >>= 3
        out += rgb
    return out


# ------------------------------------------------------------------------------ discovery
def find_images(root: str | os.PathLike) -> list[str]:
    """Image files under ``root`` (recursive, by suffix, case-insensitive), as sorted POSIX
    paths relative to ``root``. Hidden files and folders (name starting with ".") are ignored.

    Raises:
        ValueError: ``root`` is not a folder, or two images would share outputs (same path
            but the suffix, e.g. ``a.jpg`` and ``a.png``).
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"images: {str(root)!r} is not a folder")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = Path(dirpath).relative_to(root)
        for name in filenames:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                found.append((rel_dir / name).as_posix())
    found.sort()
    stems: dict[str, str] = {}
    for rel in found:
        stem = _stem(rel)
        if stem in stems:
            raise ValueError(f"images: {stems[stem]!r} and {rel!r} would write the same outputs "
                             f"({stem}.*); rename one")
        stems[stem] = rel
    return found


def _stem(rel: str) -> str:
    return os.path.splitext(rel)[0]


def _normalize_rel(text: str) -> str:
    p = Path(text).as_posix()
    while p.startswith("./"):
        p = p[2:]
    return p


# ------------------------------------------------------------------------------ labels file
def parse_labels(path: str | os.PathLike, class_names: Sequence[str] | None = None,
                 num_classes: int | None = None) -> dict[str, tuple[int, ...]]:
    """Image-level classes, one line per image: ``relative/path.jpg cls1 cls2 ...``.

    Classes are indices (``0..num_classes-1``) or names from ``class_names``. Blank lines and
    lines starting with ``#`` are ignored; an image's classes are returned sorted, without
    duplicates.

    Raises:
        ValueError: a malformed line (no class, unknown name, index out of range, an image
            listed twice), named as ``FILE:LINE``; the file cannot be read.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"labels: cannot read {str(path)!r}: {e}") from None
    by_name = {n: i for i, n in enumerate(class_names)} if class_names else {}
    if num_classes is None and class_names:
        num_classes = len(class_names)
    out: dict[str, tuple[int, ...]] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{lineno}"
        tokens = line.split()
        rel = _normalize_rel(tokens[0])
        if len(tokens) < 2:
            raise ValueError(f"labels: {where}: no class after {tokens[0]!r} (expected 'path cls1 cls2 ...')")
        if rel in out:
            raise ValueError(f"labels: {where}: {tokens[0]!r} is listed twice")
        classes = set()
        for tok in tokens[1:]:
            if tok.lstrip("-").isdigit():
                k = int(tok)
                if k < 0 or (num_classes is not None and k >= num_classes):
                    bound = f"[0, {num_classes})" if num_classes is not None else ">= 0"
                    raise ValueError(f"labels: {where}: class index {k} out of range {bound}")
            elif tok in by_name:
                k = by_name[tok]
            elif class_names:
                raise ValueError(f"labels: {where}: unknown class name {tok!r}")
            else:
                raise ValueError(f"labels: {where}: class {tok!r} is not an index and the model has no class names")
            classes.add(k)
        out[rel] = tuple(sorted(classes))
    return out


# ------------------------------------------------------------------------------ outputs
def output_paths(out: Path, rel: str, classes: Sequence[int] | None, fmt: str, with_label: bool) -> list[Path]:
    """Every file an image produces (heatmaps first, then the label map)."""
    stem = _stem(rel)
    heat = out / "heatmaps"
    if fmt == "npy":
        paths = [heat / f"{stem}.npy"]
    elif classes is None:
        paths = [heat / f"{stem}.png"]
    else:
        paths = [heat / f"{stem}_c{k}.png" for k in classes]
    if with_label:
        paths.append(out / "labels" / f"{stem}.png")
    return paths


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it over ``path``.

    The rename is atomic: ``path`` is either absent (or its old version) or complete, however
    the process stops. (No fsync: this guards against interruption, not power loss.) The
    temporary name starts with ``TMP_PREFIX`` so a later run can remove a killed run's leftovers.
    """
    with atomic_path(path, prefix=f"{TMP_PREFIX}{path.name}.") as tmp, open(tmp, "wb") as f:
        write(f)


def _png_writer(array: np.ndarray, palette: list[int] | None = None) -> Callable[[BinaryIO], None]:
    from PIL import Image

    def write(f: BinaryIO) -> None:
        im = Image.fromarray(array)
        if palette is not None:
            im.putpalette(palette)
        im.save(f, format="PNG", compress_level=1)

    return write


def _npy_writer(array: np.ndarray) -> Callable[[BinaryIO], None]:
    return lambda f: np.save(f, array, allow_pickle=False)


def _remove_stale_temporaries(out: Path) -> int:
    n = 0
    for dirpath, _, filenames in os.walk(out):
        for name in filenames:
            if name.startswith(TMP_PREFIX) and name.endswith(".tmp"):
                try:
                    os.unlink(os.path.join(dirpath, name))
                    n += 1
                except OSError:
                    pass
    return n


# ------------------------------------------------------------------------------ loading
def load_image(path: str | os.PathLike, size: int, keep_original: bool = False
               ) -> tuple[np.ndarray, tuple[int, int], np.ndarray | None]:
    """Decode ``path`` with Pillow (EXIF orientation applied, RGB) and resize it bilinearly to
    ``size x size``: ``(uint8 (size, size, 3), (H, W) original size, original uint8 or None)``."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        rgb = im.convert("RGB")
    original_size = (rgb.height, rgb.width)
    resized = np.array(rgb.resize((size, size), Image.BILINEAR), dtype=np.uint8)
    original = np.array(rgb, dtype=np.uint8) if keep_original else None
    return resized, original_size, original


class ImageRecords(torch.utils.data.Dataset):
    """``records[i]``: a dict with ``index``, ``rel`` and either ``image`` (uint8 tensor
    ``(3, size, size)``), ``size`` ``(H, W)`` and ``original`` (or None), or ``error`` (a
    message) when the file cannot be read."""

    def __init__(self, root: Path, rels: Sequence[tuple[int, str]], size: int, keep_original: bool) -> None:
        self.root, self.rels, self.size, self.keep_original = Path(root), list(rels), size, keep_original

    def __len__(self) -> int:
        return len(self.rels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        index, rel = self.rels[i]
        try:
            resized, size, original = load_image(self.root / rel, self.size, self.keep_original)
        except Exception as e:  # corrupt, truncated, unreadable: reported, the run goes on
            return {"index": index, "rel": rel, "error": f"{type(e).__name__}: {e}"}
        return {"index": index, "rel": rel, "image": torch.from_numpy(resized).permute(2, 0, 1).contiguous(),
                "size": size, "original": original, "error": None}


def _as_list(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return records


# ------------------------------------------------------------------------------ CAMs
def _compute(spec: Any, method: str, x: Tensor, target: list[int] | None, crf: bool,
             images_u8: np.ndarray | None) -> tuple[Tensor, Tensor]:
    """``(maps (N, size, size) float32 in [0, 1], class per map)`` for the preprocessed batch."""
    method_spec = registry.get(method)
    kwargs: dict[str, Any] = {"return_layers": True}
    if method_spec.accepts("crf"):
        kwargs.update(crf=crf, image=images_u8, return_intermediates=True)
        kwargs.pop("return_layers")
    res = method_spec(spec.model, x, target, **kwargs)
    return res.cam.float(), res.targets


def label_map(maps: Tensor | np.ndarray, classes: Sequence[int], threshold: float,
              image: np.ndarray | None = None, crf: bool = False) -> np.ndarray:
    """``(H, W)`` int64 labels from per-class maps ``(K, H, W)`` in [0, 1]: the argmax over
    ``[threshold, maps...]`` (ties to the background, 0, and to the first class), class
    ``classes[k]`` written as ``classes[k] + 1``. With ``crf``, the scores divided by their
    per-pixel sum are refined by :func:`camfast.crf.refine` on ``image`` (uint8
    ``(H, W, 3)``) first.

    Plain numpy on purpose: single-threaded, so it runs beside the model's threads without
    waiting on them.
    """
    m = maps.detach().cpu().numpy() if isinstance(maps, Tensor) else np.asarray(maps)
    m = np.clip(m.astype(np.float32, copy=False), 0.0, 1.0)
    if m.ndim != 3 or m.shape[0] != len(classes):
        raise ValueError(f"maps must be (K={len(classes)}, H, W), got shape {m.shape}")
    lut = np.array([0, *[k + 1 for k in classes]], dtype=np.int64)
    if crf:
        from camfast.crf import refine

        scores = np.concatenate([np.full_like(m[:1], threshold), m])
        probs = scores / np.maximum(scores.sum(0, keepdims=True), 1e-12)
        return lut[refine(image, probs, workers=1).argmax(0)]
    if len(classes) == 1:
        return np.where(m[0] > threshold, lut[1], 0)
    best = m.argmax(0)
    return np.where(np.take_along_axis(m, best[None], 0)[0] > threshold, lut[1:][best], 0)


# ------------------------------------------------------------------------------ config / summary
class UsageError(ValueError):
    """A run could not start: bad settings, labels file, model spec or image folder (the
    message names which). Errors during the run are not wrapped."""

@dataclasses.dataclass
class PseudoLabelConfig:
    """Settings of one ``camfast pseudo-label`` run (see the module docstring).

    ``threshold=None`` means: 0.15 with labels, no label map without. ``size=None`` uses the
    model's input size (224 when it has none). ``threads=None`` gives each process
    ``cores // processes per node`` torch threads (CPU). ``progress``: ``"auto"`` (a tqdm bar
    when stderr is a terminal, else a line every ``log_every`` images), ``"bar"``, ``"lines"``
    or ``"none"``; only rank 0 reports progress.
    """

    images: Path
    out: Path
    method: str = "zoom-cam"
    labels: Path | None = None
    model: str = "efficientnet-lite0"
    batch_size: int = 16
    size: int | None = None
    threshold: float | None = None
    crf: bool = False
    workers: int = 0
    format: str = "png"
    overwrite: bool = False
    device: str | None = None
    threads: int | None = None
    progress: str = "auto"  # "auto" (tqdm on a TTY, else lines), "bar", "lines", "none"
    log_every: int = 100

    def validate(self) -> None:
        self.images, self.out = Path(self.images), Path(self.out)
        try:
            self.method = registry.get(self.method).name
        except (TypeError, ValueError):
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}") from None
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        for name in ("batch_size", "log_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        for name in ("size", "threads"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"workers must be an int >= 0, got {self.workers!r}")
        if self.threshold is not None and not (isinstance(self.threshold, (int, float))
                                               and 0 <= self.threshold <= 1):
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold!r}")
        if self.progress not in ("auto", "bar", "lines", "none"):
            raise ValueError(f"progress must be auto, bar, lines or none, got {self.progress!r}")
        if not self.images.is_dir():
            raise ValueError(f"images: {str(self.images)!r} is not a folder")
        if self.labels is not None and not Path(self.labels).is_file():
            raise ValueError(f"labels: {str(self.labels)!r} is not a file")
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"out: {str(self.out)!r} exists and is not a folder")
        if self.crf and self.labels is None and self.threshold is None and self.method != "rcam":
            raise ValueError("crf refines label maps: give labels or a threshold (or use method rcam)")


@dataclasses.dataclass
class Summary:
    """What a run did (all ranks together); ``exit_code`` is 0, or 3 when an image failed."""

    found: int = 0
    written: int = 0
    skipped: int = 0
    failed: int = 0
    unlabelled: int = 0
    seconds: float = 0.0
    images_per_s: float = 0.0
    failures: list[dict[str, str]] = dataclasses.field(default_factory=list)
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    world_size: int = 1

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED_IMAGES if self.failed else 0


# ------------------------------------------------------------------------------ progress
class _Progress:
    def __init__(self, total: int, mode: str, log_every: int, enabled: bool) -> None:
        self.total, self.done, self.log_every, self.t0 = total, 0, log_every, time.perf_counter()
        self.bar = None
        self.lines = False
        if not enabled or mode == "none":
            return
        if mode in ("auto", "bar"):
            try:
                from tqdm import tqdm
            except ImportError:  # optional: plain lines instead
                tqdm = None
            if tqdm is not None and (mode == "bar" or sys.stderr.isatty()):
                self.bar = tqdm(total=total, unit="img", desc="pseudo-label", file=sys.stderr, dynamic_ncols=True)
                return
        self.lines = True
        self._next = log_every

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.lines and (self.done >= self._next or self.done == self.total):
            dt = time.perf_counter() - self.t0
            rate = self.done / dt if dt > 0 else 0.0
            eta = (self.total - self.done) / rate if rate > 0 else float("nan")
            print(f"pseudo-label: {self.done}/{self.total} images, {rate:.1f} img/s, ETA {_hms(eta)}",
                  file=sys.stderr, flush=True)
            while self._next <= self.done:
                self._next += self.log_every

    def write(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


# ------------------------------------------------------------------------------ distributed
@dataclasses.dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    initialized_here: bool = False

    @property
    def active(self) -> bool:
        return self.world_size > 1


def _dist_from_env(device: str | None) -> tuple[_Dist, torch.device]:
    env = os.environ
    world = int(env.get("WORLD_SIZE", "1"))
    d = _Dist(rank=int(env.get("RANK", "0")), world_size=world, local_rank=int(env.get("LOCAL_RANK", "0")),
              local_world_size=int(env.get("LOCAL_WORLD_SIZE", "1")))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", d.local_rank if d.active else torch.cuda.current_device())
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if d.active:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
            d.initialized_here = True
    return d, dev


def _gather(d: _Dist, obj: Any) -> list[Any]:
    if not d.active:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def _barrier(d: _Dist) -> None:
    if d.active:
        import torch.distributed as dist

        dist.barrier()


# ------------------------------------------------------------------------------ the run
def _load_spec(spec: str, device: torch.device) -> Any:
    from camfast.models import load_model

    return load_model(spec, device=device)


def run_pseudo_label(config: PseudoLabelConfig, *, model_spec: Any = None) -> Summary:
    """Run the whole pipeline for ``config`` (see the module docstring); returns the summary
    (also written to ``OUT/summary.json`` by rank 0). ``model_spec`` skips ``load_model``.

    Raises:
        UsageError: the run cannot start (the message names the argument).
    """
    try:
        config.validate()
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from e
    d, device = _dist_from_env(config.device)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = config.threads or max(1, cores // max(1, d.local_world_size))
    previous_threads = torch.get_num_threads()
    try:
        if device.type == "cpu":
            torch.set_num_threads(threads)
        return _run(config, d, device, model_spec, threads)
    finally:
        torch.set_num_threads(previous_threads)
        if d.initialized_here:
            import torch.distributed as dist

            dist.destroy_process_group()


def _run(config: PseudoLabelConfig, d: _Dist, device: torch.device, model_spec: Any, threads: int) -> Summary:
    try:
        spec = model_spec if model_spec is not None else _load_spec(config.model, device)
        size = config.size or getattr(spec, "input_size", None) or 224
        labels = None
        if config.labels is not None:
            labels = parse_labels(config.labels, getattr(spec, "class_names", None), _num_classes(spec))
        images = find_images(config.images)
        if config.crf:
            from camfast.crf import _densecrf

            _densecrf()  # pydensecrf installed? (ImportError naming the package)
    except (ValueError, TypeError, ImportError) as e:
        msg = str(e) if isinstance(e, ValueError) or config.model in str(e) else f"model {config.model!r}: {e}"
        raise UsageError(msg) from e
    threshold = config.threshold
    if threshold is None and labels is not None:
        threshold = DEFAULT_LABELS_THRESHOLD
    with_label = threshold is not None
    label_crf = config.crf and not registry.get(config.method).accepts("crf")

    out = config.out
    if d.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(out)
    _barrier(d)

    # Batches are fixed blocks of the sorted list, dealt round-robin to the ranks: every
    # image meets the same batch-mates whatever the number of processes, so 1 and N
    # processes (at the same thread count) write the same bytes.
    bs = config.batch_size
    unlabelled: list[str] = []
    todo: list[tuple[int, str]] = []
    batches: list[list[int]] = []
    skipped = 0
    for block in range(d.rank, math.ceil(len(images) / bs), d.world_size):
        batch = []
        for i in range(block * bs, min((block + 1) * bs, len(images))):
            rel = images[i]
            classes = None
            if labels is not None:
                classes = labels.get(rel)
                if classes is None:
                    unlabelled.append(rel)
                    continue
            paths = output_paths(out, rel, classes, config.format, with_label)
            if not config.overwrite and all(p.exists() for p in paths):
                skipped += 1
                continue
            batch.append(len(todo))
            todo.append((i, rel))
        if batch:
            batches.append(batch)
    if labels is not None and d.rank == 0:
        missing = sorted(set(labels) - set(images))
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            print(f"camfast pseudo-label: warning: {len(missing)} image(s) listed in {config.labels} are not under "
                  f"{config.images}: {shown}", file=sys.stderr, flush=True)
    if unlabelled:
        shown = ", ".join(unlabelled[:5]) + (" ..." if len(unlabelled) > 5 else "")
        print(f"camfast pseudo-label: warning: {len(unlabelled)} image(s) have no line in {config.labels} "
              f"and are skipped: {shown}", file=sys.stderr, flush=True)

    failures: list[dict[str, str]] = []
    written = 0
    progress = _Progress(len(todo), config.progress, config.log_every, enabled=d.rank == 0)
    t0 = time.perf_counter()
    dataset = ImageRecords(config.images, todo, size, keep_original=label_crf)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, num_workers=config.workers,
        collate_fn=_as_list, persistent_workers=False, prefetch_factor=2 if config.workers else None)
    palette = voc_palette()
    big_labels = with_label and _count_classes(spec, size, device) > 255
    try:
        for records in loader:
            ok = []
            for r in records:
                if r["error"] is not None:
                    failures.append({"path": r["rel"], "error": r["error"]})
                    progress.write(f"camfast pseudo-label: cannot read {config.images / r['rel']}: {r['error']}")
                else:
                    ok.append(r)
            if ok:
                written += _process_batch(ok, spec, config, device, labels, threshold, label_crf, palette,
                                          big_labels)
            progress.update(len(records))
    finally:
        progress.close()
    seconds = time.perf_counter() - t0

    local = {"found": len(images) if d.rank == 0 else 0, "written": written, "skipped": skipped,
             "failed": len(failures), "unlabelled": len(unlabelled), "failures": failures, "seconds": seconds}
    parts = _gather(d, local)
    summary = Summary(world_size=d.world_size)
    for p in parts:
        summary.found += p["found"]
        summary.written += p["written"]
        summary.skipped += p["skipped"]
        summary.failed += p["failed"]
        summary.unlabelled += p["unlabelled"]
        summary.failures += p["failures"]
    summary.failures.sort(key=lambda f: f["path"])
    summary.seconds = max(p["seconds"] for p in parts)
    summary.images_per_s = summary.written / summary.seconds if summary.seconds > 0 else 0.0
    summary.settings = {
        "images": str(config.images), "out": str(config.out), "method": config.method, "model": config.model,
        "model_name": getattr(spec, "name", None), "labels": None if config.labels is None else str(config.labels),
        "batch_size": config.batch_size, "size": size, "threshold": threshold, "crf": config.crf,
        "format": config.format, "workers": config.workers, "device": str(device), "threads_per_process": threads,
        "world_size": d.world_size,
    }
    if d.rank == 0:
        text = json.dumps(dataclasses.asdict(summary) | {"exit_code": summary.exit_code}, indent=1) + "\n"
        atomic_write(out / "summary.json", lambda f: f.write(text.encode()))
    _barrier(d)
    return summary


def _count_classes(spec: Any, size: int, device: torch.device) -> int:
    """The model's number of classes: its class names, else one forward of a blank image."""
    n = _num_classes(spec)
    if n is not None:
        return n
    with torch.no_grad():
        out = spec.model(spec.preprocess(torch.zeros(1, 3, size, size, device=device)))
    return int(out.shape[-1]) if isinstance(out, Tensor) else 0


def _num_classes(spec: Any) -> int | None:
    names = getattr(spec, "class_names", None)
    return len(names) if names else None


def _chunks(items: list, n: int) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _process_batch(ok: list[dict[str, Any]], spec: Any, config: PseudoLabelConfig, device: torch.device,
                   labels: dict[str, tuple[int, ...]] | None, threshold: float | None, label_crf: bool,
                   palette: list[int], big_labels: bool) -> int:
    x = torch.stack([r["image"] for r in ok]).to(device=device, dtype=torch.float32).div_(255)
    xin = spec.preprocess(x)
    # (image j, class or None) pairs, computed batch_size at a time
    if labels is None:
        pairs = [(j, None) for j in range(len(ok))]
    else:
        pairs = [(j, k) for j, r in enumerate(ok) for k in labels[r["rel"]]]
    maps: list[Tensor] = [None] * len(pairs)  # type: ignore[list-item]
    chosen: list[int] = [0] * len(pairs)
    u8 = None
    for chunk in _chunks(list(range(len(pairs))), config.batch_size):
        js = [pairs[p][0] for p in chunk]
        target = None if labels is None else [pairs[p][1] for p in chunk]
        xb = xin if js == list(range(len(ok))) else xin[js]
        if registry.get(config.method).takes_image:
            u8 = np.stack([ok[j]["image"].permute(1, 2, 0).numpy() for j in js])
        m, cls = _compute(spec, config.method, xb, target, config.crf, u8)
        m = m.detach().cpu()
        cls = cls.detach().cpu().tolist() if cls is not None else target
        for q, p in enumerate(chunk):
            maps[p] = m[q]
            chosen[p] = int(cls[q])
    written = 0
    start = 0
    for j, r in enumerate(ok):
        n = sum(1 for p in pairs if p[0] == j)
        own = torch.stack(maps[start:start + n])  # (K, size, size)
        classes = chosen[start:start + n]
        start += n
        H, W = r["size"]
        full = F.interpolate(own[None], size=(H, W), mode="bilinear", align_corners=False)[0].clamp_(0, 1)
        _write_image(r, full, classes, config, labels is not None, threshold, label_crf, palette, big_labels)
        written += 1
    return written


def _write_image(r: dict[str, Any], full: Tensor, classes: list[int], config: PseudoLabelConfig,
                 multi: bool, threshold: float | None, label_crf: bool, palette: list[int],
                 big_labels: bool) -> None:
    paths = output_paths(config.out, r["rel"], classes if multi else None, config.format, threshold is not None)
    arr = full.numpy()
    if config.format == "npy":
        heat = arr.astype(np.float16) if multi else arr[0].astype(np.float16)
        atomic_write(paths[0], _npy_writer(heat))
    else:
        q = np.rint(arr * 65535.0).astype(np.uint16)
        for k in range(len(classes) if multi else 1):
            atomic_write(paths[k], _png_writer(q[k]))
    if threshold is not None:
        lab = label_map(full, classes, threshold, r.get("original"), label_crf)
        if big_labels:
            atomic_write(paths[-1], _png_writer(lab.astype(np.uint16)))
        else:
            atomic_write(paths[-1], _png_writer(lab.astype(np.uint8), palette))
