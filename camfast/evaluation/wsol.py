"""The WSOL benchmark table: train the small classifiers, score every CAM method, write the table.

:func:`run_synthetic` (``camfast eval synthetic``, ``python benchmarks/wsol_table.py``)
trains the GAP baseline, the TAP classifier and the Puzzle-CAM classifier of
:mod:`camfast.train` on :class:`camfast.evaluation.datasets.SyntheticWSOL` (same data, budget and
initial weights; checkpoints are reused on a rerun), then scores each row of
:data:`SYNTHETIC_ROWS` on the held-out ``test`` split. :func:`run_dataset` scores the
inference-only rows of :data:`INFERENCE_ROWS` on a real dataset with a model from
:func:`camfast.models.load_model`. Both write ``<name>.md``, ``<name>.json`` and
``<name>.png`` (example maps) atomically.

Scoring protocol (:class:`Scorer`), per row and image, with the map of the ground-truth
class (``target`` = the label; for a model whose classes are not the dataset's, its top-1
class, and the classification columns are left empty):

* the map comes at the input size (bilinear) and is min-max normalised
  (:func:`camfast.normalize`), as METHODS.md's evaluation section says (wsolevaluation resizes
  bicubically);
* **GT-known Loc** / **Top-1 Loc**: largest-contour box at the row's fixed CAM threshold
  (0.2 of the max; PaS rows 0.35 of the 90th percentile, i.e. the map normalised with
  ``camfast.normalize(method="percentile", q=90)``), IoU >= 0.5 (:class:`camfast.metrics.GTKnownLoc`,
  :class:`~camfast.metrics.Top1Loc`);
* **MaxBoxAccV2** and **PxAP**: threshold-free (best threshold of the grid; all contours),
  on the min-max map for every row (PaS changes only the fixed-threshold columns);
* **mIoU**: pseudo-labels ``label + 1`` where the map exceeds a background threshold, else
  background; the best threshold of ``0.05, 0.10, ..., 0.95`` (as Puzzle-CAM's evaluation
  sweeps it), with that threshold reported;
* **F-measure** (``beta^2 = 0.3``, OIS and ODS) and **MAE** against the foreground mask (the
  rCAM paper's saliency metrics).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from camfast.evaluation import provenance as _provenance
from camfast.utils.io import atomic_path, atomic_write
from camfast.evaluation.provenance import OtherLoad

__all__ = ["INFERENCE_ROWS", "PAPER_RESULTS", "Row", "SYNTHETIC_ROWS", "Scorer", "compute_maps", "orderings",
           "MIoUSweep", "render_markdown", "run_dataset", "run_synthetic"]

# ----------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class Row:
    """One line of the table: a CAM method applied to one trained model."""

    name: str
    model: str            # "gap", "tap", "puzzle" (synthetic) or "model" (a loaded model)
    method: str           # a key of _METHODS
    pas: bool = False     # PaS for the fixed-threshold box columns (threshold 0.35 of P90)

    @property
    def box_threshold(self) -> float:
        return 0.35 if self.pas else 0.2


SYNTHETIC_ROWS: tuple[Row, ...] = (
    Row("CAM", "gap", "cam"),
    Row("Grad-CAM", "gap", "grad-cam"),
    Row("LayerCAM", "gap", "layer-cam"),
    Row("Zoom-CAM", "gap", "zoom-cam"),
    Row("rCAM (no CRF)", "gap", "rcam"),
    Row("rCAM + CRF", "gap", "rcam-crf"),
    Row("CAM + NWC + PaS", "gap", "cam-nwc", pas=True),
    Row("CAM, TAP model", "tap", "cam"),
    Row("CAM + NWC + PaS, TAP model", "tap", "cam-nwc", pas=True),
    Row("CAM, Puzzle-CAM model", "puzzle", "cam"),
    Row("multiscale CAM, Puzzle-CAM model", "puzzle", "multiscale-cam"),
)

INFERENCE_ROWS: tuple[Row, ...] = (
    Row("CAM", "model", "cam"),
    Row("Grad-CAM", "model", "grad-cam"),
    Row("LayerCAM", "model", "layer-cam"),
    Row("Zoom-CAM", "model", "zoom-cam"),
    Row("rCAM (no CRF)", "model", "rcam"),
    Row("rCAM + CRF", "model", "rcam-crf"),
    Row("CAM + NWC + PaS", "model", "cam-nwc", pas=True),
    Row("multiscale CAM (Puzzle-CAM inference)", "model", "multiscale-cam"),
)

METRIC_COLUMNS = (
    ("top1_cls", "Top-1 cls"), ("gt_known_loc", "GT-known Loc"), ("top1_loc", "Top-1 Loc"),
    ("max_box_acc_v2", "MaxBoxAccV2"), ("pxap", "PxAP"), ("miou", "mIoU"), ("f_ois", "F OIS"),
    ("f_ods", "F ODS"), ("mae", "MAE"),
)
_MIOU_THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(1, 20))


# ----------------------------------------------------------------------------- maps

def compute_maps(method: str, model: nn.Module, x: Tensor, target: Tensor, images: Tensor | None = None) -> Tensor:
    """``(B, H, W)`` map of class ``target`` for ``x``, at the input size, min-max normalised.

    Args:
        method: a method of :mod:`camfast.methods.registry` (any spelling; the table's rows
            are its names: ``cam``, ``cam-nwc``, ``grad-cam``, ``zoom-cam``, ``rcam-crf``, ...).
        model: the classifier (eval mode), returning logits.
        x: the model's input ``(B, 3, H, W)``.
        target: ``(B,)`` class indices.
        images: the images in [0, 1] (a CRF's colour term); default ``x`` scaled per image.
    """
    from camfast.localization import normalize
    from camfast.methods import registry

    spec = registry.get(method)
    kwargs = {}
    if spec.takes_image and images is not None:
        kwargs["image"] = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return normalize(spec(model, x, target, **kwargs).float())


# ----------------------------------------------------------------------------- scoring

class MIoUSweep:
    """mIoU of thresholded single-class pseudo-labels at every background threshold at once.

    A pixel of an image whose map is ``M`` and whose class is ``c`` gets ``c + 1`` where
    ``M > t`` (strict) and 0 (background) elsewhere; for each ``t`` of ``thresholds`` the
    confusion matrix over the dataset is accumulated from one histogram of ``M`` per (target
    class, image class), and the mIoU is :class:`camfast.metrics.MIoU`'s on that matrix. Equal
    to ``MIoU(num_classes + 1, bg_threshold=t).update(cams, target, labels)`` with the
    ``(B, K, H, W)`` CAMs holding ``M`` in channel ``c`` (tested), for all ``t`` in one pass.
    """

    def __init__(self, num_classes: int, thresholds: Sequence[float] = _MIOU_THRESHOLDS,
                 ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.thresholds = torch.tensor(sorted(float(t) for t in thresholds), dtype=torch.float64)
        self.ignore_index = ignore_index
        n = num_classes + 1
        self._hist = torch.zeros(n, num_classes, len(self.thresholds) + 1, dtype=torch.int64)

    def update(self, maps: Tensor, labels: Tensor, target: Tensor) -> None:
        """``maps (B, H, W)`` floating, ``labels (B,)`` image classes, ``target (B, H, W)`` ints."""
        n, k, nb = self.num_classes + 1, self.num_classes, len(self.thresholds) + 1
        bins = torch.bucketize(maps.detach().cpu().to(torch.float64), self.thresholds, right=False)  # thresholds < M
        target = target.cpu().to(torch.int64)
        cls = labels.cpu().to(torch.int64)[:, None, None].expand_as(target)
        valid = target != self.ignore_index
        if bool(((target[valid] < 0) | (target[valid] >= n)).any()):
            raise ValueError(f"target values must be in [0, {n}) or {self.ignore_index}")
        idx = (target[valid] * k + cls[valid]) * nb + bins[valid]
        self._hist += torch.bincount(idx, minlength=n * k * nb).reshape(n, k, nb)

    def confusion(self, j: int) -> Tensor:
        """``(K + 1, K + 1)`` (target, prediction) counts at ``thresholds[j]``."""
        n = self.num_classes + 1
        above = self._hist[:, :, j + 1:].sum(-1)               # predicted c + 1
        below = self._hist[:, :, :j + 1].sum(-1).sum(1)         # predicted background
        cm = torch.zeros(n, n, dtype=torch.int64)
        cm[:, 1:] = above
        cm[:, 0] = below
        return cm

    def compute(self) -> tuple[float, float]:
        """The best mIoU (percent) over the thresholds and its threshold."""
        from camfast.evaluation.metrics import MIoU

        best = (-1.0, float("nan"))
        for j, t in enumerate(self.thresholds.tolist()):
            m = MIoU(self.num_classes + 1, ignore_index=self.ignore_index)
            m.confusion = self.confusion(j)
            value = m.compute()
            if value > best[0]:
                best = (value, t)
        return best


class Scorer:
    """Streaming metrics of one row (see the module docstring for the protocol)."""

    def __init__(self, row: Row, num_classes: int) -> None:
        from camfast.evaluation import metrics

        self.row = row
        self.num_classes = num_classes
        self.gt_known = metrics.GTKnownLoc(cam_threshold=row.box_threshold)
        self.top1_loc = metrics.Top1Loc(cam_threshold=row.box_threshold)
        self.v2 = metrics.MaxBoxAccV2()
        self.pxap = metrics.PxAP()
        self.miou = MIoUSweep(num_classes)
        self.fmeasure = metrics.FMeasure()
        self.mae = metrics.MAE()
        self.correct = 0
        self.count = 0
        self.has_boxes = self.has_masks = self.has_classes = False
        self.seconds = 0.0

    def update(self, maps: Tensor, labels: Tensor, preds: Tensor | None, boxes: Sequence[Tensor] | None,
               masks: Tensor | None, ignore: Tensor | None = None, segmentation: Tensor | None = None) -> None:
        """One batch: ``maps (B, H, W)`` in [0, 1] of class ``labels (B,)``; ``preds (B,)`` top-1
        classes or None (model classes are not the dataset's); ``boxes`` a list of ``(n_i, 4)``;
        ``masks (B, H, W)`` bool foreground; ``segmentation (B, H, W)`` int (0 background,
        ``class + 1``, 255 ignore; default ``masks * (labels + 1)``)."""
        import camfast

        b = maps.shape[0]
        self.count += b
        if preds is not None:
            self.has_classes = True
            self.correct += int((preds.cpu() == labels.cpu()).sum())
        if boxes is not None:
            self.has_boxes = True
            box_maps = camfast.normalize(maps, method="percentile", q=90) if self.row.pas else maps
            self.gt_known.update(box_maps, boxes)
            if preds is not None:
                self.top1_loc.update(box_maps, boxes, preds, labels)
            self.v2.update(maps, boxes)
        if masks is not None:
            self.has_masks = True
            self.pxap.update(maps, masks, ignore)
            target = segmentation if segmentation is not None else masks.long() * (labels.long()[:, None, None] + 1)
            self.miou.update(maps, labels, target)
            keep = masks if ignore is None else masks & ~ignore
            self.fmeasure.update(maps, keep)
            self.mae.update(maps, keep)

    def compute(self) -> dict[str, Any]:
        """The row's numbers in percent (MAE and F-measure as fractions, as the rCAM paper), None
        where the data lack what a metric needs."""
        out: dict[str, Any] = {k: None for k, _ in METRIC_COLUMNS}
        if self.has_classes:
            out["top1_cls"] = 100.0 * self.correct / max(self.count, 1)
        if self.has_boxes:
            out["gt_known_loc"] = self.gt_known.compute()
            out["max_box_acc_v2"] = self.v2.compute()
            if self.has_classes:
                out["top1_loc"] = self.top1_loc.compute()
        if self.has_masks:
            out["pxap"] = self.pxap.compute()
            out["miou"], out["miou_threshold"] = self.miou.compute()
            f = self.fmeasure.compute()
            out["f_ois"], out["f_ods"] = f.ois, f.ods
            out["mae"] = self.mae.compute()
        out["seconds"] = self.seconds
        out["images"] = self.count
        return out


def _batches(n: int, batch_size: int) -> list[tuple[int, int]]:
    return [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def _score_rows(rows: Sequence[Row], models: dict[str, nn.Module], preprocess: Callable[[Tensor], Tensor],
                batches: Callable[[], Any], num_batches: int, num_classes: int, class_match: bool,
                examples: int, log: Callable[[str], None]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Score ``rows``; ``batches()`` yields dicts with ``image``, ``label``, ``boxes``, ``mask``,
    ``ignore``, ``segmentation`` (collated). Returns the row results and the figure's examples."""
    # class-agnostic scoring when the model's classes are not the dataset's: one foreground class
    scorers = [Scorer(r, num_classes if class_match else 1) for r in rows]
    ex: dict[str, Any] = {"images": [], "masks": [], "maps": {r.name: [] for r in rows}}
    t0 = time.perf_counter()
    for i, batch in enumerate(batches()):
        images = batch["image"]
        x = preprocess(images)
        labels = batch["label"]
        preds: dict[str, Tensor] = {}
        for name, model in models.items():
            with torch.no_grad():
                preds[name] = model(x).argmax(1).cpu()
        for s in scorers:
            target = labels if class_match else preds[s.row.model]
            t = time.perf_counter()
            maps = compute_maps(s.row.method, models[s.row.model], x, target.to(x.device), images)
            s.seconds += time.perf_counter() - t
            maps = maps.cpu()
            s.update(maps, target.cpu() if class_match else torch.zeros_like(target.cpu()),
                     preds[s.row.model] if class_match else None, batch.get("boxes"),
                     batch.get("mask"), batch.get("ignore"), batch.get("segmentation") if class_match else None)
            have = len(ex["maps"][s.row.name])
            if have < examples:
                ex["maps"][s.row.name].extend(maps[:examples - have])
        if len(ex["images"]) < examples:
            take = examples - len(ex["images"])
            ex["images"].extend(images[:take].cpu())
            m = batch.get("mask")
            ex["masks"].extend(list(m[:take]) if m is not None else [None] * min(take, images.shape[0]))
        log(f"[score] batch {i + 1}/{num_batches}, {sum(s.count for s in scorers) // len(scorers)} images, "
            f"{time.perf_counter() - t0:.1f} s")
    results = []
    for s in scorers:
        res = {"name": s.row.name, "model": s.row.model, "method": s.row.method, "pas": s.row.pas,
               "box_threshold": s.row.box_threshold, **s.compute()}
        results.append(res)
        log(f"[score] {s.row.name}: " + ", ".join(f"{label} {_fmt(res[k], k)}" for k, label in METRIC_COLUMNS
                                                  if res[k] is not None) + f" ({s.seconds:.1f} s)")
    return results, ex


# ----------------------------------------------------------------------------- published numbers

#: The seeds' published numbers for the comparisons the table can check (METHODS.md, seeds/).
PAPER_RESULTS: tuple[dict[str, Any], ...] = (
    {"claim": "Zoom-CAM localises better than Grad-CAM", "source": "Shi et al. 2020 (seed 000)",
     "data": "ILSVRC val, VGG16", "metric": "top-1 localisation error (lower is better)",
     "baseline": ("Grad-CAM", 61.95), "method": ("Zoom-CAM", 59.11), "higher_is_better": False},
    {"claim": "Zoom-CAM pseudo-labels beat Grad-CAM's", "source": "Shi et al. 2020 (seed 000)",
     "data": "VOC12 val, pseudo-labels", "metric": "mIoU", "baseline": ("Grad-CAM", 37.1),
     "method": ("Zoom-CAM", 38.8), "higher_is_better": True},
    {"claim": "Puzzle-CAM's CAMs beat the baseline classifier's", "source": "Jo & Yu 2021 (seed 002)",
     "data": "VOC12 train, ResNet-50", "metric": "pseudo-label mIoU", "baseline": ("CAM (L_cls only)", 47.82),
     "method": ("Puzzle-CAM", 51.53), "higher_is_better": True},
    {"claim": "rCAM is a better saliency map than CAM", "source": "Ha et al. 2018 (seed 003, Table 1)",
     "data": "Pascal-S, FT, ImgSal", "metric": "F-measure OIS", "baseline": ("CAM1", None),
     "method": ("rCAM", None), "higher_is_better": True, "text": "OIS up by 13-24% relative"},
    {"claim": "TAP, NWC and PaS each improve CAM's localisation", "source": "Bae et al. 2020 (seed 001)",
     "data": "CUB-200-2011, ILSVRC, OpenImages30k; VGG16, ResNet-50, MobileNetV1, GoogLeNet",
     "metric": "Top-1 Loc, GT-known Loc, PxAP", "baseline": ("CAM", None), "method": ("CAM + TAP + NWC + PaS", None),
     "higher_is_better": True,
     "text": "a consistent improvement for every dataset and backbone; the seed's tables are figures, with no "
             "numbers in its text"},
)

# (paper claim index, our baseline row, our method row, metric keys to compare)
_ORDERING_CHECKS = (
    (0, "Grad-CAM", "Zoom-CAM", ("top1_loc", "max_box_acc_v2")),
    (1, "Grad-CAM", "Zoom-CAM", ("miou",)),
    (2, "CAM", "multiscale CAM, Puzzle-CAM model", ("miou",)),
    (3, "CAM", "rCAM + CRF", ("f_ois", "mae")),
    (3, "CAM", "rCAM (no CRF)", ("f_ois", "mae")),
    (4, "CAM", "CAM + NWC + PaS, TAP model", ("top1_loc", "gt_known_loc", "pxap")),
    (4, "CAM", "CAM, TAP model", ("top1_loc", "gt_known_loc", "pxap")),
    (4, "CAM", "CAM + NWC + PaS", ("top1_loc", "gt_known_loc")),
)


def orderings(results: Sequence[dict[str, Any]], checks=_ORDERING_CHECKS) -> list[dict[str, Any]]:
    """For each published ordering, whether it holds in ``results`` (metric by metric)."""
    by_name = {r["name"]: r for r in results}
    out = []
    for claim, base, method, keys in checks:
        if base not in by_name or method not in by_name:
            continue
        for key in keys:
            a, b = by_name[base].get(key), by_name[method].get(key)
            if a is None or b is None:
                continue
            better = b < a if key == "mae" else b > a
            out.append({"claim": PAPER_RESULTS[claim]["claim"], "baseline": base, "method": method, "metric": key,
                        "baseline_value": a, "method_value": b, "agrees": bool(better), "tie": a == b})
    return out


# ----------------------------------------------------------------------------- provenance and output

def stamp() -> dict[str, Any]:
    """Date, machine, versions, native build and git commit (the benchmarks' stamp)."""
    return _provenance.stamp(torch.device("cpu"))


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process so far, all its threads."""
    t = os.times()
    return t.user + t.system


def _fmt(value: Any, key: str = "") -> str:
    if value is None:
        return "-"
    if key in ("mae", "f_ois", "f_ods"):
        return f"{value:.3f}"
    return f"{value:.1f}"


def _table(results: Sequence[dict[str, Any]], model_names: dict[str, str]) -> str:
    header = ["method", "model", *[label for _, label in METRIC_COLUMNS], "s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        cells = [r["name"], model_names.get(r["model"], r["model"]),
                 *[_fmt(r.get(k), k) for k, _ in METRIC_COLUMNS], f"{r['seconds']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _paper_table() -> str:
    lines = ["| claim | source | data | metric | baseline | method |", "|---|---|---|---|---|---|"]
    for p in PAPER_RESULTS:
        base = p["baseline"][0] + (f" {p['baseline'][1]}" if p["baseline"][1] is not None else "")
        meth = p["method"][0] + (f" {p['method'][1]}" if p["method"][1] is not None else "")
        if p.get("text"):
            meth += f" ({p['text']})"
        lines.append(f"| {p['claim']} | {p['source']} | {p['data']} | {p['metric']} | {base} | {meth} |")
    return "\n".join(lines)


def _orderings_text(checks: Sequence[dict[str, Any]], images: int | None = None) -> str:
    if not checks:
        return "No published ordering could be checked with these rows."
    labels = dict(METRIC_COLUMNS)
    lines = []
    for c in checks:
        verdict = "tie" if c["tie"] else ("agrees" if c["agrees"] else "does NOT agree")
        k = c["metric"]
        fmt = (lambda v: f"{v:.3f}") if k in ("mae", "f_ois", "f_ods") else (lambda v: f"{v:.2f}")
        lines.append(f"- {c['claim']}: {c['method']} {fmt(c['method_value'])} vs {c['baseline']} "
                     f"{fmt(c['baseline_value'])} {labels[k]}{' (lower is better)' if k == 'mae' else ''}: "
                     f"**{verdict}**")
    n = sum(c["agrees"] and not c["tie"] for c in checks)
    lines.append(f"\n{n} of {len(checks)} comparisons go the published way."
                 + (f" With {images} held-out images one image is {100 / images:.2f} points of a box accuracy: "
                    "differences of a point or less are a handful of images." if images else ""))
    return "\n".join(lines)


def render_markdown(data: dict[str, Any]) -> str:
    """The results file as Markdown (everything in it comes from ``data``)."""
    st = data["stamp"]
    m = st["machine"]
    load = data.get("other_busy_cores")
    git = st.get("git", {})
    lines = [f"# WSOL benchmark table: {data['dataset']}", "",
             f"Generated by `{data['command']}`; do not edit.", "", "```text",
             f"{st['date']}, commit {git.get('commit')}{' (dirty)' if git.get('dirty') else ''}, "
             f"torch {st['versions']['torch']}, python {st['versions']['python']}",
             f"{m.get('cpu')}, {m.get('cores')} cores, {m.get('torch_threads')} torch threads"
             + ("" if load is None else f"; other processes kept {load:.2f} cores busy on average"),
             f"total {data['seconds']['total']:.0f} s wall (training {data['seconds']['training']:.0f} s, "
             f"scoring {data['seconds']['scoring']:.0f} s)"
             + (f"; {data['seconds']['cpu']:.0f} s of CPU time in this process" if data["seconds"].get("cpu") else ""),
             "```", ""]
    if data.get("training"):
        lines += ["## Training (same data, epochs, batch size, optimiser and initial weights)", "",
                  "| model | loss | iterations | training seconds | reused checkpoint |", "|---|---|---|---|---|"]
        for t in data["training"]:
            secs = "unknown" if t["seconds"] is None else f"{t['seconds']:.0f}"
            lines.append(f"| {t['model']} | {t['loss']} | {t['iterations']} | {secs} | "
                         f"{'yes' if t['reused'] else 'no'} |")
        lines.append("")
        cfg = data.get("config", {})
        lines += ["Configuration: " + ", ".join(f"{k}={v}" for k, v in cfg.items()), ""]
    lines += ["## Results (held-out split, percent; F-measure and MAE as fractions)", "",
              _table(data["results"], data.get("model_names", {})), "",
              "GT-known / Top-1 Loc: largest-contour box at the fixed CAM threshold (0.2 of the max; "
              "PaS rows: 0.35 of the 90th percentile), IoU >= 0.5. MaxBoxAccV2 and PxAP: best threshold "
              "(all contours), on the min-max map for every row. mIoU: background where the map is at or "
              "below the best threshold of 0.05..0.95 (per row: " +
              ", ".join(f"{r['name']} {r['miou_threshold']:.2f}" for r in data["results"]
                        if r.get("miou_threshold") is not None) + "). F-measure (beta^2 = 0.3) and MAE "
              "against the object mask. `s`: seconds spent computing the row's maps.", "",
              "## Published numbers (the seeds)", "", _paper_table(), "",
              "## Do the published orderings hold here?", "",
              _orderings_text(data["orderings"], data["results"][0].get("images") if data["results"] else None), ""]
    if data.get("notes"):
        lines += ["## Notes", "", *[f"- {n}" for n in data["notes"]], ""]
    return "\n".join(lines)


def write_figure(path: Path, examples: dict[str, Any], row_names: Sequence[str]) -> None:
    """A grid: one held-out image per line, the image with its mask's outline, then each row's map."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = len(examples["images"])
    cols = 1 + len(row_names)
    if n == 0:
        return
    fig, axes = plt.subplots(n, cols, figsize=(1.6 * cols, 1.7 * n + 0.4), squeeze=False)
    for i in range(n):
        img = examples["images"][i].permute(1, 2, 0).numpy()
        mask = examples["masks"][i]
        ax = axes[i][0]
        ax.imshow(img)
        if mask is not None and bool(mask.any()) and not bool(mask.all()):
            ax.contour(mask.float().numpy(), levels=[0.5], colors="lime", linewidths=0.8)
        for j, name in enumerate(row_names, start=1):
            maps = examples["maps"][name]
            ax = axes[i][j]
            if i < len(maps):
                ax.imshow(img)
                ax.imshow(maps[i].numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
                if mask is not None and bool(mask.any()) and not bool(mask.all()):
                    ax.contour(mask.float().numpy(), levels=[0.5], colors="white", linewidths=0.6)
    for j, name in enumerate(["image + mask", *row_names]):
        axes[0][j].set_title(name.replace(", ", ",\n").replace(" + CRF", "\n+ CRF"), fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=80)
    finally:
        plt.close(fig)


def _write_outputs(out_dir: Path, name: str, data: dict[str, Any], examples: dict[str, Any],
                   row_names: Sequence[str], log: Callable[[str], None]) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": out_dir / f"{name}.md", "json": out_dir / f"{name}.json", "png": out_dir / f"{name}.png"}
    write_figure(paths["png"], examples, row_names)
    atomic_write(paths["json"], json.dumps(data, indent=1, default=float) + "\n")
    atomic_write(paths["md"], render_markdown(data))
    for p in paths.values():
        log(f"wrote {p}")
    return paths


# ----------------------------------------------------------------------------- synthetic

def _check_rows(rows: Sequence[Row] | None, default: Sequence[Row]) -> tuple[Row, ...]:
    if rows is None:
        return tuple(default)
    rows = tuple(rows)
    if not rows or not all(isinstance(r, Row) for r in rows):
        raise TypeError("rows must be a non-empty sequence of camfast.wsol.Row")
    return rows


def run_synthetic(out_dir: str | os.PathLike, checkpoints: str | os.PathLike, *, quick: bool = False,
                  retrain: bool = False, config: Any = None, rows: Sequence[Row] | None = None,
                  batch_size: int = 64, examples: int = 4, name: str = "wsol_table",
                  command: str = "camfast eval synthetic", log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train GAP / TAP / Puzzle-CAM on SyntheticWSOL (or reuse their checkpoints), score ``rows``
    on the held-out ``test`` split and write ``<out_dir>/<name>.{md,json,png}``.

    Args:
        out_dir: where the table, its JSON and the figure go.
        checkpoints: the training checkpoint folder (``gap.pt``, ``tap.pt``, ``puzzle.pt``).
        quick: :meth:`camfast.train.TrainConfig.quick` (a seconds-long smoke run).
        retrain: train even when a finished checkpoint of the same configuration exists.
        config: a :class:`camfast.train.TrainConfig` (overrides ``quick``).
        rows: the rows to score (default :data:`SYNTHETIC_ROWS`).
        batch_size: scoring batch size.
        examples: held-out images in the figure.

    Returns:
        The data written to the JSON file.
    """
    from camfast.evaluation import train as T

    rows = _check_rows(rows, SYNTHETIC_ROWS)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(examples, bool) or not isinstance(examples, int) or examples < 0:
        raise ValueError(f"examples must be an int >= 0, got {examples!r}")
    cfg = config if config is not None else (T.TrainConfig.quick() if quick else T.TrainConfig())
    if not isinstance(cfg, T.TrainConfig):
        raise TypeError(f"config must be a camfast.train.TrainConfig, got {type(cfg).__name__}")
    out_dir, checkpoints = Path(out_dir), Path(checkpoints)
    load = OtherLoad()
    cpu0 = _cpu_seconds()
    t_start = time.perf_counter()
    log(f"[data] SyntheticWSOL: {cfg.n_train} train + {cfg.n_val} test images of {cfg.size}x{cfg.size}, "
        f"{cfg.num_classes} classes")
    data, test = T.make_data(cfg, "train"), T.make_data(cfg, "test")
    needed = sorted({r.model for r in rows}, key=T.METHODS.index)
    training, models = [], {}
    t_train = time.perf_counter()
    for m in needed:
        ckpt = checkpoints / f"{m}.pt"
        if retrain and ckpt.exists():
            ckpt.unlink()
        res = T.train(m, cfg, checkpoints, resume=True, data=data, log=log)
        reused = res.start_iteration == res.iteration
        log(f"[train] {m}: {'reused ' + str(ckpt) if reused else f'{res.iteration} iterations in {res.seconds:.1f} s'}")
        training.append({"model": m, "loss": "Puzzle-CAM (MLSM + MLSM on tiles + alpha L1)" if m == "puzzle"
                         else "cross-entropy", "iterations": res.iteration, "seconds": res.total_seconds,
                         "reused": reused})
        models[m] = T.load_model_checkpoint(m, cfg, res.checkpoint)
    training_seconds = time.perf_counter() - t_train

    n = len(test)
    spans = _batches(n, batch_size)

    def batches():
        for s, e in spans:
            yield {"image": test.images[s:e], "label": test.labels[s:e], "boxes": test.boxes[s:e],
                   "mask": test.masks[s:e], "ignore": None, "segmentation": None}

    t_score = time.perf_counter()
    results, ex = _score_rows(rows, models, lambda x: x, batches, len(spans), cfg.num_classes, True, examples, log)
    scoring_seconds = time.perf_counter() - t_score
    model_names = {"gap": "GAP", "tap": "TAP", "puzzle": "Puzzle-CAM"}
    data_out = {
        "dataset": "SyntheticWSOL", "command": command, "stamp": stamp(), "other_busy_cores": load.cores(),
        "config": asdict(cfg), "training": training, "model_names": model_names, "results": results,
        "orderings": orderings(results), "paper": [dict(p) for p in PAPER_RESULTS],
        "seconds": {"total": time.perf_counter() - t_start, "training": training_seconds,
                    "scoring": scoring_seconds, "cpu": _cpu_seconds() - cpu0},
        "notes": [
            "Each model's top-1 classification accuracy appears on every row of that model.",
            "The multiscale CAM (scales 0.5/1/1.5/2 with flips) keeps only the ground-truth class, then is "
            "min-max normalised like every row.",
            "rCAM's shape layer is the stride-8 stage of the network (found automatically).",
        ],
    }
    _write_outputs(out_dir, name, data_out, ex, [r.name for r in rows], log)
    return data_out


# ----------------------------------------------------------------------------- real datasets

DATASETS = ("voc", "cub", "imagenet", "openimages")


def load_dataset(name: str, root: str | os.PathLike, size: int, split: str | None = None,
                 metadata: str | os.PathLike | None = None) -> Any:
    """A :mod:`camfast.evaluation.datasets` dataset resized to ``size x size``."""
    from camfast.evaluation import datasets as D

    if name == "voc":
        return D.VOCSegmentation(root, split or "val", resize=size)
    if name == "cub":
        return D.CUB(root, split or "test", resize=size)
    if name == "imagenet":
        return D.ImageNetVal(root, resize=size)
    if name == "openimages":
        if metadata is None:
            raise ValueError("metadata: --dataset openimages needs --metadata DIR (wsolevaluation's metadata folder)")
        return D.WSOLEvalMetadata(root, metadata, "OpenImages", split or "test", resize=size)
    raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {name!r}")


def run_dataset(dataset: str, root: str | os.PathLike, model: str, out_dir: str | os.PathLike, *,
                metadata: str | os.PathLike | None = None, split: str | None = None, size: int | None = None,
                batch_size: int = 16, limit: int | None = None, rows: Sequence[Row] | None = None,
                examples: int = 4, device: str = "cpu", command: str = "camfast eval",
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Score the inference-only rows on a real dataset with a model from :func:`camfast.models.load_model`.

    The ground-truth class's map is scored when the model's outputs are the dataset's classes
    (same count); otherwise the model's top-1 class's map is scored (class-agnostic
    localisation) and the classification columns stay empty. Rows the model cannot run (CAM
    needs a "global pooling then linear" head) are reported and left out. Writes
    ``<out_dir>/wsol_table-<dataset>.{md,json,png}``.
    """
    from camfast.evaluation.datasets import collate
    from camfast.models import load_model

    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {dataset!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be None or a positive int, got {limit!r}")
    rows = _check_rows(rows, INFERENCE_ROWS)
    load = OtherLoad()
    t_start = time.perf_counter()
    spec = load_model(model, device=device)
    size = size or spec.input_size or 224
    ds = load_dataset(dataset, root, size, split, metadata)
    n = len(ds) if limit is None else min(limit, len(ds))
    if n == 0:
        raise ValueError(f"root: the {dataset} dataset at {str(root)!r} has no images")
    dev = torch.device(device)
    probe = spec.preprocess(ds[0]["image"][None].to(dev))
    with torch.no_grad():
        outputs = int(spec.model(probe).shape[1])
    class_match = outputs == ds.num_classes
    notes = []
    if not class_match:
        notes.append(f"The model has {outputs} outputs and the dataset {ds.num_classes} classes: the model's top-1 "
                     "class's map is scored (class-agnostic localisation); no classification columns.")
    usable = []
    for r in rows:
        try:
            compute_maps(r.method, spec.model, probe, torch.zeros(1, dtype=torch.long, device=dev),
                         ds[0]["image"][None])
            usable.append(r)
        except (ValueError, TypeError, ImportError, RuntimeError) as e:
            log(f"[score] skipping {r.name}: {e}")
            notes.append(f"{r.name} left out: {e}")
    if not usable:
        raise ValueError(f"model: no CAM method runs on {spec.name}")
    spans = _batches(n, batch_size)

    def batches():
        for s, e in spans:
            b = collate([ds[i] for i in range(s, e)])
            b["image"] = b["image"].to(dev)
            yield b

    t_score = time.perf_counter()
    results, ex = _score_rows(usable, {"model": spec.model}, spec.preprocess, batches, len(spans), ds.num_classes,
                              class_match, examples, log)
    data_out = {
        "dataset": f"{dataset} ({root}, {n} images at {size}x{size})", "command": command, "stamp": stamp(),
        "other_busy_cores": load.cores(), "config": {"model": spec.name, "size": size, "images": n},
        "training": [], "model_names": {"model": spec.name}, "results": results, "orderings": orderings(results),
        "paper": [dict(p) for p in PAPER_RESULTS],
        "seconds": {"total": time.perf_counter() - t_start, "training": 0.0,
                    "scoring": time.perf_counter() - t_score},
        "notes": notes,
    }
    _write_outputs(Path(out_dir), f"wsol_table-{dataset}", data_out, ex, [r.name for r in usable], log)
    return data_out
