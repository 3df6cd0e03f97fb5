"""The run: start-up checks, the batch loop around a :class:`RunContext`, the summary."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from camfast.cli import common
from camfast.cli.common import FATAL_WRITE_ERRNOS, OutputStopped, UsageError
from camfast.cli.pseudo_label import distributed, outputs
from camfast.cli.pseudo_label.background import Writer, prefetch
from camfast.cli.pseudo_label.config import DEFAULT_LABELS_THRESHOLD, PseudoLabelConfig, Summary
from camfast.cli.pseudo_label.dataset import ImageRecords, as_list
from camfast.cli.pseudo_label.discovery import find_images
from camfast.cli.pseudo_label.labels import label_map, match_ids, parse_labels, voc_palette
from camfast.methods import registry
from camfast.methods.registry import MethodSpec
from camfast.utils.io import atomic_write
from camfast.utils.lock import FolderLocked, folder_lock
from camfast.utils.progress import Progress

__all__ = ["NoImagesFound", "RunContext", "run_pseudo_label"]


class NoImagesFound(UsageError):
    """The image folder holds no image (exit status 1)."""


@dataclasses.dataclass
class RunContext:
    """Everything a batch needs, fixed at start-up."""

    config: PseudoLabelConfig
    model: Any                                   # the ModelSpec (model, preprocess, class names)
    method: MethodSpec
    device: torch.device
    dist: distributed.Dist
    size: int
    labels: dict[str, tuple[int, ...]] | None
    threshold: float | None                      # None: no label map
    label_crf: bool                              # refine label maps with camfast.crf (method has no CRF)
    palette: list[int]
    failures: list[dict[str, str]] = dataclasses.field(default_factory=list)
    written: int = 0

    @property
    def with_label(self) -> bool:
        return self.threshold is not None

    def fail(self, rel: str, error: str, progress: Progress) -> None:
        self.failures.append({"path": rel, "error": error})
        progress.write(f"camfast pseudo-label: {error}")


def run_pseudo_label(config: PseudoLabelConfig, *, model_spec: Any = None) -> Summary:
    """Run the whole pipeline for ``config`` (see :mod:`camfast.cli.pseudo_label`); returns the
    summary (also written to ``OUT/summary.json`` by rank 0, also when interrupted or stopped
    by the output folder, if it can still be written). ``model_spec`` skips loading the model.

    Raises:
        UsageError: the run cannot start (the message names the argument);
            :class:`NoImagesFound` when the folder holds no image.
        KeyboardInterrupt: after writing the summary (``interrupted: true``).
    """
    try:
        config.validate()
        device = common.resolve_device(config.device)
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from e
    d, device = distributed.dist_from_env(device)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = config.threads or max(1, cores // max(1, d.local_world_size))
    previous_threads = torch.get_num_threads()
    try:
        if device.type == "cpu":
            torch.set_num_threads(threads)
        ctx, images = _start(config, d, device, model_spec)
        return _locked_run(ctx, images, threads)
    finally:
        torch.set_num_threads(previous_threads)
        distributed.shutdown(d)


def _start(config: PseudoLabelConfig, d: distributed.Dist, device: torch.device, model_spec: Any
           ) -> tuple[RunContext, list[str]]:
    try:
        spec = model_spec if model_spec is not None else common.load_model(config.model, device)
        size = config.size or getattr(spec, "input_size", None) or 224
        labels = None
        if config.labels is not None:
            labels = parse_labels(config.labels, getattr(spec, "class_names", None), _num_classes(spec))
        skipped: list[str] = []
        images = find_images(config.images, exclude=[config.out], skipped=skipped)
        if labels is not None and str(config.labels).lower().endswith(".npy"):
            labels = match_ids(labels, images)  # cls_labels.npy: keyed by image id
        elif labels is not None:
            # A text labels file is written for this folder: an image it names that is not
            # there is a mistake (a typo, the wrong folder); cls_labels.npy covers all of VOC.
            unknown = sorted(set(labels) - set(images) - set(skipped))
            if unknown:
                raise ValueError(f"labels: {labels.where.get(unknown[0], config.labels)}: {unknown[0]!r} is not an "
                                 f"image under {config.images}" + (f" ({len(unknown)} listed images are not: "
                                 f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''})"
                                 if len(unknown) > 1 else ""))
        method = registry.get(config.method)
        missing = method.missing()
        if missing:
            raise ImportError(f"method {method.name} needs {', '.join(missing)}, which is not installed")
        label_crf = config.crf and not method.accepts("crf")
        if config.crf:
            from camfast import crf

            crf.require()  # pydensecrf installed? (ImportError naming the package)
    except (ValueError, TypeError, ImportError) as e:
        raise UsageError(str(e)) from e
    if not images and not skipped:
        raise NoImagesFound(f"no images found in {config.images} (searched recursively for "
                            f"{', '.join(_suffixes())})")
    threshold = config.threshold
    if threshold is None and labels is not None:
        threshold = DEFAULT_LABELS_THRESHOLD
    ctx = RunContext(config, spec, method, device, d, size, labels, threshold, label_crf, voc_palette())
    for rel in skipped if d.rank == 0 else ():  # rank 0 reports them for all
        message = f"{config.images / rel}: not a regular file (a FIFO, socket or device); skipped"
        ctx.failures.append({"path": rel, "error": message})
        print(f"camfast pseudo-label: {message}", file=sys.stderr)
    return ctx, images


def _suffixes() -> list[str]:
    from camfast.utils.image import IMAGE_SUFFIXES

    return list(IMAGE_SUFFIXES)


def _locked_run(ctx: RunContext, images: list[str], threads: int) -> Summary:
    """Rank 0 holds ``OUT/.camfast.lock`` for the whole run; with it held, every temporary file
    in OUT is a dead run's and is removed. Every rank stops when rank 0 cannot take it."""
    out, d = ctx.config.out, ctx.dist
    with contextlib.ExitStack() as stack:
        error: str | None = None
        if d.rank == 0:
            try:
                stack.enter_context(folder_lock(out))
                outputs.remove_stale_temporaries(out)
            except FolderLocked as e:
                error = str(e)
            except OSError as e:
                error = f"cannot write the output folder: {common.describe_os_error(e, out)}"
        errors = [e for e in distributed.gather(d, error) if e]
        if errors:
            raise OutputStopped(errors[0])
        return _run(ctx, images, threads)


def _plan(ctx: RunContext, images: list[str]) -> tuple[list[tuple[int, str]], list[list[int]], int, list[str]]:
    """This rank's images to do, its batches (indices into them), skipped and unlabelled.

    Batches are fixed blocks of the sorted list, dealt round-robin to the ranks: every image
    meets the same batch-mates whatever the number of processes, so 1 and N processes (at the
    same thread count) write the same bytes."""
    config, d, bs = ctx.config, ctx.dist, ctx.config.batch_size
    todo: list[tuple[int, str]] = []
    batches: list[list[int]] = []
    unlabelled: list[str] = []
    skipped = 0
    for block in range(d.rank, math.ceil(len(images) / bs), d.world_size):
        batch = []
        for i in range(block * bs, min((block + 1) * bs, len(images))):
            rel = images[i]
            classes = None
            if ctx.labels is not None:
                classes = ctx.labels.get(rel)
                if classes is None:
                    unlabelled.append(rel)
                    continue
            paths = outputs.output_paths(config.out, rel, classes, config.format, ctx.with_label)
            if not config.overwrite and all(p.exists() for p in paths):
                skipped += 1
                continue
            batch.append(len(todo))
            todo.append((i, rel))
        if batch:
            batches.append(batch)
    return todo, batches, skipped, unlabelled


def _warn_labels(ctx: RunContext, images: list[str], unlabelled: list[str]) -> None:
    config = ctx.config
    if ctx.labels is not None and ctx.dist.rank == 0:
        missing = sorted(set(ctx.labels) - set(images))  # only with cls_labels.npy (text labels: an error)
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            print(f"camfast pseudo-label: warning: {len(missing)} image(s) listed in {config.labels} are not under "
                  f"{config.images}: {shown}", file=sys.stderr, flush=True)
    if unlabelled:
        shown = ", ".join(unlabelled[:5]) + (" ..." if len(unlabelled) > 5 else "")
        print(f"camfast pseudo-label: warning: {len(unlabelled)} image(s) have no line in {config.labels} "
              f"and are skipped: {shown}", file=sys.stderr, flush=True)


def _run(ctx: RunContext, images: list[str], threads: int) -> Summary:
    config, d = ctx.config, ctx.dist
    todo, batches, skipped, unlabelled = _plan(ctx, images)
    distributed.barrier(d)
    _warn_labels(ctx, images, unlabelled)
    progress = Progress(len(todo), "pseudo-label", config.progress, every=config.log_every,
                        enabled=d.rank == 0, noun="images", unit="img")
    t0 = time.perf_counter()
    dataset = ImageRecords(config.images, todo, ctx.size, keep_original=ctx.label_crf or config.multiscale)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, num_workers=config.workers,
        collate_fn=as_list, persistent_workers=False, prefetch_factor=2 if config.workers else None)
    stopped = None
    interrupted = False
    # decoding ahead: worker processes do it with --workers; else a thread, two batches ahead
    batches_in = loader if config.workers else prefetch(loader, depth=2)
    writer = Writer(lambda item: _write_image(ctx, *item), lambda item, error: _written(ctx, item, error, progress),
                    depth=2 * config.batch_size, stops=lambda e: e.errno in FATAL_WRITE_ERRNOS)
    try:
        try:
            for records in batches_in:
                ok = []
                for r in records:
                    if r["error"] is not None:
                        ctx.fail(r["rel"], f"cannot read {config.images / r['rel']}: {r['error']}", progress)
                    else:
                        ok.append(r)
                if ok:
                    _process_batch(ctx, ok, writer)
                progress.update(len(records))
            writer.close()
        finally:
            for item, error in writer.abort():  # outcomes of the writes done while stopping
                if error is None:
                    ctx.written += 1
                elif isinstance(error, OSError) and error.errno not in FATAL_WRITE_ERRNOS:
                    ctx.fail(item[0]["rel"], _write_error(item[0], error), progress)
            if hasattr(batches_in, "close"):
                batches_in.close()
    except OutputStopped as e:
        stopped = str(e)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        progress.close()
    local = {"found": len(images) if d.rank == 0 else 0, "written": ctx.written, "skipped": skipped,
             "failed": len(ctx.failures), "unlabelled": len(unlabelled), "failures": ctx.failures,
             "seconds": time.perf_counter() - t0, "stopped": stopped}
    # an interrupted rank does not wait for the others: its summary is its own
    parts = [local] if interrupted else distributed.gather(d, local)
    summary = _summary(ctx, parts, threads)
    summary.interrupted = interrupted
    if d.rank == 0:
        _write_summary(ctx, summary)
    if interrupted:
        raise KeyboardInterrupt
    distributed.barrier(d)
    return summary


def _summary(ctx: RunContext, parts: list[dict[str, Any]], threads: int) -> Summary:
    config = ctx.config
    summary = Summary(world_size=ctx.dist.world_size)
    for p in parts:
        summary.found += p["found"]
        summary.written += p["written"]
        summary.skipped += p["skipped"]
        summary.failed += p["failed"]
        summary.unlabelled += p["unlabelled"]
        summary.failures += p["failures"]
        summary.stopped = summary.stopped or p["stopped"]
    summary.failures.sort(key=lambda f: f["path"])
    summary.seconds = max(p["seconds"] for p in parts)
    summary.images_per_s = summary.written / summary.seconds if summary.seconds > 0 else 0.0
    summary.settings = {
        "images": str(config.images), "out": str(config.out), "method": config.method, "model": config.model,
        "model_name": getattr(ctx.model, "name", None),
        "labels": None if config.labels is None else str(config.labels),
        "batch_size": config.batch_size, "size": ctx.size, "threshold": ctx.threshold, "crf": config.crf,
        "format": config.format, "scales": list(config.scales) if config.scales else None,
        "flip": config.flip if config.multiscale else None, "workers": config.workers, "device": str(ctx.device),
        "threads_per_process": threads, "world_size": ctx.dist.world_size,
    }
    return summary


def _write_summary(ctx: RunContext, summary: Summary) -> None:
    text = json.dumps(dataclasses.asdict(summary) | {"exit_code": summary.exit_code}, indent=1) + "\n"
    path = ctx.config.out / "summary.json"
    try:
        atomic_write(path, text, prefix=outputs.TMP_PREFIX)
    except OSError as e:  # the folder that stopped the run may refuse the summary too
        note = f"the summary could not be written either ({common.describe_os_error(e, path)})"
        summary.stopped = f"{summary.stopped}; {note}" if summary.stopped else note


def _num_classes(spec: Any) -> int | None:
    names = getattr(spec, "class_names", None)
    return len(names) if names else None


def _compute(ctx: RunContext, x: Tensor, target: list[list[int]] | None, images_u8: np.ndarray | None
             ) -> tuple[Tensor | list[Tensor], Tensor | list[Tensor] | None]:
    """The maps for the preprocessed batch, float32 in [0, 1], and their classes: without
    ``target``, ``(B, size, size)`` (each image's top class) and ``(B,)``; with one class
    list per image, a ``(K_b, size, size)`` stack per image and a ``(K_b,)`` tensor each.
    Only the registry row is consulted: ``image=`` for a method that takes one, ``crf=True``
    for a method with its own CRF when ``--crf`` is given."""
    kwargs: dict[str, Any] = {"return_layers": True}
    if ctx.method.takes_image:
        kwargs["image"] = images_u8
    if ctx.config.crf and ctx.method.accepts("crf"):
        kwargs["crf"] = True
    res = ctx.method(ctx.model.model, x, target, **kwargs)
    if isinstance(res.cam, (list, tuple)):
        return [c.float() for c in res.cam], res.targets
    return res.cam.float(), res.targets


def _process_batch(ctx: RunContext, ok: list[dict[str, Any]], writer: Writer) -> None:
    """The maps of a batch, upsampled to each image's original size and handed to the writer.

    With labels, every image's classes come from ONE call of the method (a list of classes
    per image: one forward, one backward per round of classes)."""
    if ctx.config.multiscale:
        for r in ok:
            _process_multiscale(ctx, r, writer)
        return
    x = torch.stack([r["image"] for r in ok]).to(device=ctx.device, dtype=torch.float32).div_(255)
    xin = ctx.model.preprocess(x)
    target = None if ctx.labels is None else [list(ctx.labels[r["rel"]]) for r in ok]
    u8 = np.stack([r["image"].permute(1, 2, 0).numpy() for r in ok]) if ctx.method.takes_image else None
    maps, cls = _compute(ctx, xin, target, u8)
    for j, r in enumerate(ok):
        if target is None:
            own = maps[j:j + 1].detach().cpu()  # (1, size, size)
            classes = [int(cls[j])] if cls is not None else [0]
        else:
            own = maps[j].detach().cpu()  # (K, size, size)
            classes = [int(k) for k in (cls[j].tolist() if cls is not None else target[j])]
        H, W = r["size"]
        full = F.interpolate(own[None], size=(H, W), mode="bilinear", align_corners=False)[0].clamp_(0, 1)
        writer.put((r, full, classes))


def _process_multiscale(ctx: RunContext, r: dict[str, Any], writer: Writer) -> None:
    """IRN's recipe (:func:`camfast.methods.multiscale.multiscale`) on one image at its own
    size: every class of the image in one call per scale; ``high_res`` is the map written
    (``cam``, the stride-4 one, too with ``--format irn``)."""
    from camfast.methods.multiscale import multiscale

    config = ctx.config
    x = torch.from_numpy(np.ascontiguousarray(r["original"])).permute(2, 0, 1)[None]
    xin = ctx.model.preprocess(x.to(device=ctx.device, dtype=torch.float32).div_(255))
    target = None if ctx.labels is None else [list(ctx.labels[r["rel"]])]
    res = multiscale(ctx.method, ctx.model.model, xin, target, scales=config.scales, flip=config.flip)
    if target is None:
        high, cam, classes = res.high_res[:1], res.cam[:1], [int(res.targets[0])]
    else:
        high, cam, classes = res.high_res[0], res.cam[0], [int(k) for k in res.targets[0].tolist()]
    high, cam = high.detach().float().cpu(), cam.detach().float().cpu()
    H, W = r["size"]
    if tuple(high.shape[-2:]) != (H, W):  # decoded reduced (a huge image): back to its size
        high = F.interpolate(high[None], size=(H, W), mode="bilinear", align_corners=False)[0]
        cam = F.interpolate(cam[None], size=(math.ceil(H / 4), math.ceil(W / 4)), mode="bilinear",
                            align_corners=False)[0]
    writer.put((r, high.clamp_(0, 1), classes, cam))


def _write_error(r: dict[str, Any], error: OSError) -> str:
    return f"cannot write the outputs of {r['rel']}: {common.describe_os_error(error)}"


def _written(ctx: RunContext, item: tuple, error: BaseException | None, progress: Progress) -> None:
    """An image's outputs are written (``error`` None) or failed: counted, reported, or the
    run stopped (the folder cannot take more files)."""
    r = item[0]
    if error is None:
        ctx.written += 1
        return
    assert isinstance(error, OSError)
    if error.errno in FATAL_WRITE_ERRNOS:
        raise OutputStopped(f"cannot write {common.describe_os_error(error)}") from error
    ctx.fail(r["rel"], _write_error(r, error), progress)


def _write_image(ctx: RunContext, r: dict[str, Any], full: Tensor, classes: list[int],
                 cam: Tensor | None = None) -> None:
    config = ctx.config
    multi = ctx.labels is not None
    paths = outputs.output_paths(config.out, r["rel"], classes if multi else None, config.format, ctx.with_label)
    arr = full.numpy()
    if config.format == "irn":
        outputs.write_irn(paths[0], np.asarray(classes, dtype=np.int64), cam.numpy(), arr)
    elif config.format == "npy":
        outputs.write_npy(paths[0], arr if multi else arr[0])
    else:
        for k in range(len(classes) if multi else 1):
            outputs.write_png16(paths[k], arr[k])
    if ctx.with_label:
        lab = label_map(full, classes, ctx.threshold, r.get("original"), ctx.label_crf)
        outputs.write_label_map(paths[-1], lab, ctx.palette)

