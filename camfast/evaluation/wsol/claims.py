"""The papers' claims the table can check: their published numbers (:data:`PAPER_RESULTS`) and
the orderings between rows that each claim predicts (:data:`ORDERING_CHECKS`, :func:`orderings`).

A check names its two rows by ``(model, method)``: the baseline classifier is ``"gap"`` in
the synthetic table and the one loaded ``"model"`` of a real-dataset table (``"base"`` below
matches either), so the same checks read both tables.
"""

from __future__ import annotations

from typing import Any, Sequence

__all__ = ["ORDERING_CHECKS", "PAPER_RESULTS", "orderings"]

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

#: (index into PAPER_RESULTS, baseline (model, method), compared (model, method), metric keys).
#: ``"base"``: the baseline classifier (``"gap"`` or a real-dataset table's ``"model"``).
ORDERING_CHECKS: tuple[tuple[int, tuple[str, str], tuple[str, str], tuple[str, ...]], ...] = (
    (0, ("base", "grad-cam"), ("base", "zoom-cam"), ("top1_loc", "max_box_acc_v2")),
    (1, ("base", "grad-cam"), ("base", "zoom-cam"), ("miou",)),
    (2, ("base", "cam"), ("puzzle", "multiscale-cam"), ("miou",)),
    (3, ("base", "cam"), ("base", "rcam-crf"), ("f_ois", "mae")),
    (3, ("base", "cam"), ("base", "rcam"), ("f_ois", "mae")),
    (4, ("base", "cam"), ("tap", "cam-nwc"), ("top1_loc", "gt_known_loc", "pxap")),
    (4, ("base", "cam"), ("tap", "cam"), ("top1_loc", "gt_known_loc", "pxap")),
    (4, ("base", "cam"), ("base", "cam-nwc"), ("top1_loc", "gt_known_loc")),
)
_BASE_MODELS = ("gap", "model")
_LOWER_IS_BETTER = ("mae",)


def _find(results: Sequence[dict[str, Any]], model: str, method: str) -> dict[str, Any] | None:
    models = _BASE_MODELS if model == "base" else (model,)
    return next((r for r in results if r.get("model") in models and r.get("method") == method), None)


def orderings(results: Sequence[dict[str, Any]], checks=ORDERING_CHECKS) -> list[dict[str, Any]]:
    """For each published ordering, whether it holds in ``results`` (metric by metric).

    ``results`` are the table's row dicts (``name``, ``model``, ``method`` and the metric
    keys); a check whose rows or metric values are absent is left out.
    """
    out = []
    for claim, (base_model, base_method), (model, method), keys in checks:
        base, row = _find(results, base_model, base_method), _find(results, model, method)
        if base is None or row is None:
            continue
        for key in keys:
            a, b = base.get(key), row.get(key)
            if a is None or b is None:
                continue
            better = b < a if key in _LOWER_IS_BETTER else b > a
            out.append({"claim": PAPER_RESULTS[claim]["claim"], "baseline": base["name"], "method": row["name"],
                        "metric": key, "baseline_value": a, "method_value": b, "agrees": bool(better),
                        "tie": a == b})
    return out
