"""Running the table: :func:`run_synthetic` (train the three classifiers, score the synthetic
rows) and :func:`run_dataset` (score the inference rows on a real dataset with a loaded model).

Both check, before any training or scoring, what the rows and the metrics need: a row whose
method needs a module that is not installed (``rcam-crf`` needs ``pydensecrf``,
:meth:`camfast.methods.registry.MethodSpec.missing`) is left out with a note; OpenCV (box
metrics) and matplotlib (the figure) missing is an :class:`ImportError` at once.
"""

from __future__ import annotations

import importlib.util
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from camfast.evaluation import provenance
from camfast.evaluation.wsol.claims import PAPER_RESULTS, orderings
from camfast.evaluation.wsol.report import write_outputs
from camfast.evaluation.wsol.rows import MODEL_NAMES, Row, check_rows, inference_rows, synthetic_rows
from camfast.evaluation.wsol.scoring import compute_maps, score_rows, spans

__all__ = ["CHECKPOINT_DIR", "DATASETS", "load_dataset", "runnable_rows", "run_dataset", "run_synthetic", "stamp"]

DATASETS = ("voc", "cub", "imagenet", "openimages")
#: The checkpoint folder of :func:`run_synthetic` under its ``out_dir`` when none is given.
CHECKPOINT_DIR = "wsol_checkpoints"
# modules every table needs, beyond torch: (import name, what needs it, how to install it)
_NEEDS = (("cv2", "the box metrics", "pip install opencv-python-headless (or camfast[cli])"),
          ("matplotlib", "the figure", "pip install matplotlib (or camfast[cli])"))
# how to install a method's optional module (MethodSpec.needs), where it is not its own name
_INSTALL = {"pydensecrf": "pip install 'camfast[crf]' (the pydensecrf2 package)"}


def stamp() -> dict[str, Any]:
    """Date, machine, versions, native build and git commit (the benchmarks' stamp)."""
    return provenance.stamp(torch.device("cpu"))


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process so far, all its threads."""
    t = os.times()
    return t.user + t.system


def _check_positive(name: str, value: object, zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if zero else 1):
        raise ValueError(f"{name} must be {'an int >= 0' if zero else 'a positive int'}, got {value!r}")


def _require_table_modules() -> None:
    missing = [(m, what, how) for m, what, how in _NEEDS if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError("the WSOL table needs " + "; ".join(f"{m} for {what}: {how}" for m, what, how in missing))


def runnable_rows(rows: Sequence[Row], log: Callable[[str], None] = print) -> tuple[list[Row], list[str]]:
    """The rows whose methods have every optional module they need, and a note per row left out."""
    from camfast.methods import registry

    keep, notes = [], []
    for r in rows:
        missing = registry.get(r.method).missing()
        if missing:
            how = "; ".join(_INSTALL.get(m, f"pip install {m}") for m in missing)
            note = f"{r.name} left out: its method {r.method} needs {', '.join(missing)}, not installed here ({how})"
            log(f"[rows] {note}")
            notes.append(note)
        else:
            keep.append(r)
    if not keep:
        raise ImportError("no row of the table can run here: " + " ".join(notes))
    return keep, notes


def run_synthetic(out_dir: str | os.PathLike, checkpoints: str | os.PathLike | None = None, *, quick: bool = False,
                  retrain: bool = False, config: Any = None, rows: Sequence[Row] | None = None,
                  batch_size: int = 64, examples: int = 4, name: str = "wsol_table",
                  command: str = "camfast eval synthetic", log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train GAP / TAP / Puzzle-CAM on SyntheticWSOL (or reuse their checkpoints), score ``rows``
    on the held-out ``test`` split and write ``<out_dir>/<name>.{md,json,png}``.

    Args:
        out_dir: where the table, its JSON and the figure go.
        checkpoints: the training checkpoint folder (``gap.pt``, ``tap.pt``, ``puzzle.pt``);
            default ``<out_dir>/wsol_checkpoints``. A corrupt checkpoint is reported and retrained.
        quick: :meth:`camfast.train.TrainConfig.quick` (a seconds-long smoke run).
        retrain: train even when a finished checkpoint of the same configuration exists.
        config: a :class:`camfast.train.TrainConfig` (overrides ``quick``).
        rows: the rows to score (default :func:`~camfast.evaluation.wsol.rows.synthetic_rows`);
            rows whose method needs a module not installed here are left out with a note.
        batch_size: scoring batch size.
        examples: held-out images in the figure.

    Returns:
        The data written to the JSON file.

    Raises:
        ImportError: OpenCV or matplotlib is missing, or no row can run (before any training).
    """
    from camfast.evaluation import train as T

    rows = check_rows(rows, synthetic_rows())
    _check_positive("batch_size", batch_size)
    _check_positive("examples", examples, zero=True)
    cfg = config if config is not None else (T.TrainConfig.quick() if quick else T.TrainConfig())
    if not isinstance(cfg, T.TrainConfig):
        raise TypeError(f"config must be a camfast.train.TrainConfig, got {type(cfg).__name__}")
    _require_table_modules()
    rows, notes = runnable_rows(rows, log)
    out_dir = Path(out_dir)
    checkpoints = out_dir / CHECKPOINT_DIR if checkpoints is None else Path(checkpoints)
    load = provenance.OtherLoad()
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
    batch_spans = spans(n, batch_size)

    def batches():
        for s, e in batch_spans:
            yield {"image": test.images[s:e], "label": test.labels[s:e], "boxes": test.boxes[s:e],
                   "mask": test.masks[s:e], "ignore": None, "segmentation": None}

    t_score = time.perf_counter()
    results, ex = score_rows(rows, models, lambda x: x, batches, len(batch_spans), cfg.num_classes, True, examples, log)
    scoring_seconds = time.perf_counter() - t_score
    data_out = {
        "dataset": "SyntheticWSOL", "command": command, "stamp": stamp(), "other_busy_cores": load.cores(),
        "config": asdict(cfg), "training": training, "model_names": dict(MODEL_NAMES), "results": results,
        "orderings": orderings(results), "paper": [dict(p) for p in PAPER_RESULTS],
        "seconds": {"total": time.perf_counter() - t_start, "training": training_seconds,
                    "scoring": scoring_seconds, "cpu": _cpu_seconds() - cpu0},
        "notes": [
            "Each model's top-1 classification accuracy appears on every row of that model.",
            "The multiscale CAM (scales 0.5/1/1.5/2 with flips) keeps only the ground-truth class, then is "
            "min-max normalised like every row.",
            "rCAM's shape layer is the stride-8 stage of the network (found automatically).",
            *notes,
        ],
    }
    write_outputs(out_dir, name, data_out, ex, [r.name for r in rows], log)
    return data_out


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
    """Score the inference rows on a real dataset with a model from :func:`camfast.models.load_model`.

    The ground-truth class's map is scored when the model's outputs are the dataset's classes
    (same count); otherwise the model's top-1 class's map is scored (class-agnostic
    localisation) and the classification columns stay empty. Rows whose method needs a
    module not installed here, and rows the model cannot run (CAM needs a "global pooling
    then linear" head), are reported and left out. Writes
    ``<out_dir>/wsol_table-<dataset>.{md,json,png}``.
    """
    from camfast.evaluation.datasets import collate
    from camfast.models import load_model

    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {dataset!r}")
    _check_positive("batch_size", batch_size)
    if limit is not None:
        _check_positive("limit", limit)
    rows = check_rows(rows, inference_rows())
    _require_table_modules()
    rows, notes = runnable_rows(rows, log)
    load = provenance.OtherLoad()
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
    batch_spans = spans(n, batch_size)

    def batches():
        for s, e in batch_spans:
            b = collate([ds[i] for i in range(s, e)])
            b["image"] = b["image"].to(dev)
            yield b

    t_score = time.perf_counter()
    results, ex = score_rows(usable, {"model": spec.model}, spec.preprocess, batches, len(batch_spans),
                             ds.num_classes, class_match, examples, log)
    data_out = {
        "dataset": f"{dataset} ({root}, {n} images at {size}x{size})", "command": command, "stamp": stamp(),
        "other_busy_cores": load.cores(), "config": {"model": spec.name, "size": size, "images": n},
        "training": [], "model_names": {"model": spec.name}, "results": results, "orderings": orderings(results),
        "paper": [dict(p) for p in PAPER_RESULTS],
        "seconds": {"total": time.perf_counter() - t_start, "training": 0.0,
                    "scoring": time.perf_counter() - t_score},
        "notes": notes,
    }
    write_outputs(Path(out_dir), f"wsol_table-{dataset}", data_out, ex, [r.name for r in usable], log)
    return data_out
