"""``camfast eval``: the WSOL benchmark table, and ``camfast eval pseudo-labels``.

``camfast eval pseudo-labels --pred DIR --gt DIR/SegmentationClass`` scores a folder of
pseudo-labels (camfast's label PNGs, camfast's npy heatmaps with ``--labels``, or IRN's
``.npy`` CAM dicts) against VOC-style class PNGs: mIoU at IRN's background threshold (0.15),
the per-class IoU table, and with ``--sweep`` every threshold (the best one, and the curve as
a figure in ``--out`` when matplotlib is installed). IRN's pickled dicts are read with a
restricted unpickler (:mod:`camfast.evaluation.safe_npy`): a file whose pickle would run
code is refused. The library part is :mod:`camfast.evaluation.pseudo_labels`.

``camfast eval synthetic`` trains the small GAP / TAP / Puzzle-CAM classifiers on
SyntheticWSOL (or reuses their checkpoints), scores every CAM method on the held-out split
and writes ``OUT/wsol_table.{md,json,png}``. ``camfast eval --dataset cub --root DIR --model
SPEC`` scores the inference-only methods on a real dataset with a given model and writes
``OUT/wsol_table-<dataset>.*``. The library part is :mod:`camfast.evaluation.wsol`.

``camfast eval faithfulness`` scores every registered CAM method with the faithfulness metrics
(Average Drop / Increase in Confidence, deletion / insertion, ROAD) on real pretrained models
(EfficientNet-Lite0, and Lite1/Lite2 when installed, or ``--model SPEC``) and real photos (the
ones shipped inside installed packages, or ``--images``), and writes
``OUT/faithfulness-<device>.{md,json,png}``. The library part is
:mod:`camfast.evaluation.map_quality` (metrics: :mod:`camfast.evaluation.faithfulness`).

Rows whose method needs an optional module that is not installed (``rcam-crf`` needs
pydensecrf: ``pip install 'camfast[crf]'``) are left out with a note, before any training.

Exit status: 0 done, 2 bad arguments (a missing folder, an unknown model, an unreadable
checkpoint, ...) or a missing requirement (OpenCV, matplotlib).
"""

from __future__ import annotations

import argparse
import sys

DATASET_CHOICES = ("synthetic", "voc", "cub", "imagenet", "openimages")
PSEUDO_LABELS = "pseudo-labels"
FAITHFULNESS = "faithfulness"
#: the options only ``camfast eval faithfulness`` takes (argparse dests)
FAITHFULNESS_OPTIONS = ("images", "method", "steps", "percentiles", "deletion_baseline", "insertion_baseline",
                        "score")

EPILOG = """\
examples:
  camfast eval synthetic                          # train 3 small models (or reuse them), score, write the table
  camfast eval synthetic --quick --out /tmp/t     # seconds-long smoke run
  camfast eval --dataset cub --root CUB_200_2011 --model efficientnet-lite0 --limit 500
  camfast eval --dataset openimages --root dataset/OpenImages --metadata metadata --model my_models:resnet
  camfast eval pseudo-labels --pred pl/labels --gt VOC2012/SegmentationClass
  camfast eval pseudo-labels --pred irn/cam --gt VOC2012/SegmentationClass --sweep --out eval
  camfast eval faithfulness                       # every method x metric, EfficientNet-Lite0, offline photos
  camfast eval faithfulness --quick --out /tmp/f  # smoke run: 2 photos, 96 px, few steps
  camfast eval faithfulness --images photos/ --method grad-cam --method zoom-cam --steps 50
faithfulness: OUT/faithfulness-<device>.md (AD, IC, deletion/insertion AUC, ROAD MoRF/LeRF/combined per
  method), .json, .png (the maps side by side); --model defaults to every EfficientNet-Lite installed
pseudo-labels: --pred holds one file per image, matched to GT/<stem>.png: label PNGs (0 background, class k as
  k + 1), IRN CAM dicts (.npy {"keys", "cam", "high_res"}; scored on --key, default high_res) or camfast npy
  heatmaps (classes from --labels: the run's labels file or cls_labels.npy); score maps get a background
  plane of --threshold (default 0.15, IRN's) before the argmax; 255 in the GT is ignored; --out writes
  pseudo_labels.{md,json} and, with --sweep, pseudo_labels_sweep.png (matplotlib)
outputs: OUT/wsol_table.md (the table, the seeds' numbers, which orderings hold), .json, .png (example maps);
  synthetic: the trained models in OUT/wsol_checkpoints (or --checkpoints), reused on a rerun
rows whose method needs a module not installed here (rcam-crf: pydensecrf) are left out with a note
exit status: 0 done, 2 bad arguments or a missing requirement."""


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("dataset", nargs="?", default=None, choices=(*DATASET_CHOICES, PSEUDO_LABELS, FAITHFULNESS),
                        help="synthetic (default), a real dataset (same as --dataset), pseudo-labels (score a "
                        "pseudo-label folder) or faithfulness (the map-quality table on real models and photos)")
    parser.add_argument("--dataset", dest="dataset_opt", default=None, choices=DATASET_CHOICES,
                        help="the dataset (voc, cub, imagenet, openimages need --root and --model)")
    parser.add_argument("--root", default=None, help="the dataset's folder (real datasets)")
    parser.add_argument("--metadata", default=None, help="wsolevaluation metadata folder (openimages)")
    parser.add_argument("--split", default=None, help="dataset split (default: voc val, cub test, openimages test)")
    parser.add_argument("--model", default=None, metavar="SPEC",
                        help="real datasets: 'efficientnet-lite0', 'module:callable' or a TorchScript file")
    parser.add_argument("--size", type=int, default=None, help="real datasets: image side (default: the model's, "
                        "else 224)")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="real datasets: score the first N images")
    parser.add_argument("--out", default=None, help="output folder (default benchmarks/results; pseudo-labels: "
                        "none, the table is printed)")
    parser.add_argument("--checkpoints", default=None,
                        help="synthetic: training checkpoint folder, reused on a rerun (default OUT/wsol_checkpoints)")
    parser.add_argument("--retrain", action="store_true", help="synthetic: train even when checkpoints exist")
    parser.add_argument("--quick", action="store_true", help="synthetic: seconds-long smoke run (tiny data)")
    parser.add_argument("--batch-size", type=int, default=None, help="scoring batch size (default 64 synthetic, 16 real)")
    parser.add_argument("--examples", type=int, default=4, help="held-out images in the figure (default 4)")
    parser.add_argument("--device", default="cpu", help="real datasets: cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    fa = parser.add_argument_group("faithfulness")
    fa.add_argument("--images", nargs="+", default=None, metavar="PATH",
                    help="photos (files or folders) to score; default: the photos shipped in installed packages")
    fa.add_argument("--method", action="append", default=None, type=_method_type, metavar="NAME",
                    help="a registered method (repeat for several; default every method)")
    fa.add_argument("--steps", type=int, default=None, help="deletion / insertion steps (default 20)")
    fa.add_argument("--percentiles", default=None, metavar="P,P,...",
                    help="ROAD: percent of pixels removed (default 10,20,...,90)")
    fa.add_argument("--deletion-baseline", default=None, choices=("zeros", "blur", "mean"),
                    help="what deleted pixels become (default zeros)")
    fa.add_argument("--insertion-baseline", default=None, choices=("zeros", "blur", "mean"),
                    help="the image pixels are inserted into (default blur)")
    fa.add_argument("--score", default=None, choices=("softmax", "logit"), help="the class score (default softmax)")
    pl = parser.add_argument_group("pseudo-labels")
    pl.add_argument("--pred", default=None, metavar="DIR", help="the pseudo-label folder (PNG labels or .npy maps)")
    pl.add_argument("--gt", default=None, metavar="DIR", help="the ground-truth class PNGs (VOC SegmentationClass)")
    pl.add_argument("--threshold", type=float, default=None,
                    help="background score for score maps (default 0.15, IRN's cam_eval_thres)")
    pl.add_argument("--sweep", action="store_true", help="also score every threshold 0.00..0.99: the best one and "
                    "the curve")
    pl.add_argument("--key", default="high_res", help="which map of an IRN dict (default high_res)")
    pl.add_argument("--labels", default=None, metavar="FILE", help="classes of camfast npy heatmaps: the run's "
                    "labels file or VOC's cls_labels.npy")
    pl.add_argument("--num-classes", type=int, default=21, help="classes with the background (default 21, VOC)")
    pl.add_argument("--progress", default="auto", choices=("auto", "bar", "lines", "none"),
                    help="progress display (default auto)")


def _method_type(text: str) -> str:
    from camfast.cli.common import method_type

    return method_type(text)


def _error(message: str) -> int:
    print(f"camfast eval: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace, log=None) -> int:
    import torch

    from camfast.evaluation import wsol

    log = log or (lambda line: print(line, flush=True))
    if args.dataset and args.dataset_opt and args.dataset != args.dataset_opt:
        return _error(f"dataset given twice: {args.dataset!r} and --dataset {args.dataset_opt!r}")
    dataset = args.dataset or args.dataset_opt or "synthetic"
    if dataset == FAITHFULNESS:
        return _faithfulness(args, log)
    given = [f"--{n.replace('_', '-')}" for n in FAITHFULNESS_OPTIONS if getattr(args, n, None) is not None]
    if given:
        return _error(f"{', '.join(given)} apply to 'camfast eval faithfulness'")
    if dataset == PSEUDO_LABELS:
        return _pseudo_labels(args, log)
    extra = [f"--{n.replace('_', '-')}" for n in ("pred", "gt", "threshold", "labels") if getattr(args, n) is not None]
    if extra or args.sweep:
        return _error(f"{', '.join(extra + (['--sweep'] if args.sweep else []))} apply to 'camfast eval pseudo-labels'")
    if args.out is None:
        args.out = "benchmarks/results"
    for name in ("batch_size", "size", "limit", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            return _error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if args.examples < 0:
        return _error(f"--examples must be >= 0, got {args.examples}")
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "camfast eval " + dataset + (" --quick" if args.quick else "")
    if dataset == "synthetic":
        extra = [f"--{n}" for n in ("root", "metadata", "model", "size", "limit", "split")
                 if getattr(args, n) is not None]
        if extra:
            return _error(f"{', '.join(extra)} apply to real datasets, not to synthetic")
        try:
            wsol.run_synthetic(args.out, args.checkpoints, quick=args.quick, retrain=args.retrain,
                               batch_size=args.batch_size or 64, examples=args.examples, command=command, log=log)
        except (ImportError, ValueError) as e:  # a missing requirement, an unreadable checkpoint
            return _error(str(e))
        return 0
    if args.root is None or args.model is None:
        return _error(f"--dataset {dataset} needs --root DIR and --model SPEC")
    if args.quick or args.retrain:
        return _error("--quick and --retrain apply to the synthetic benchmark only")
    try:
        wsol.run_dataset(dataset, args.root, args.model, args.out, metadata=args.metadata, split=args.split,
                         size=args.size, batch_size=args.batch_size or 16, limit=args.limit, examples=args.examples,
                         device=args.device, command=f"camfast eval --dataset {dataset}", log=log)
    except (FileNotFoundError, ValueError, TypeError, ImportError) as e:
        return _error(str(e))
    return 0


def _pseudo_labels(args: argparse.Namespace, log) -> int:
    """``camfast eval pseudo-labels``: exit 0, or 2 with a message naming the argument or file."""
    import json
    from pathlib import Path

    from camfast.evaluation import pseudo_labels as P

    if args.pred is None or args.gt is None:
        return _error("pseudo-labels needs --pred DIR and --gt DIR (e.g. VOC2012/SegmentationClass)")
    wsol_only = [f"--{n.replace('_', '-')}" for n in ("root", "metadata", "model", "size", "limit", "split",
                                                     "checkpoints", "batch_size") if getattr(args, n) is not None]
    if wsol_only or args.quick or args.retrain or args.dataset_opt:
        return _error(f"{', '.join(wsol_only) or '--quick/--retrain/--dataset'} do not apply to pseudo-labels")
    threshold = P.IRN_THRESHOLD if args.threshold is None else args.threshold
    if not 0 <= threshold <= 1:
        return _error(f"--threshold must be in [0, 1], got {threshold}")
    try:
        classes = None
        if args.labels is not None:
            from camfast.evaluation.datasets.voc import read_class_labels

            classes = read_class_labels(args.labels, num_classes=args.num_classes - 1, by_stem=True)
        scores = P.evaluate_folder(args.pred, args.gt, threshold=threshold, sweep=args.sweep,
                                   num_classes=args.num_classes, key=args.key, classes=classes,
                                   progress=args.progress)
    except (ValueError, FileNotFoundError) as e:
        return _error(str(e))
    result = scores.as_dict()
    log(scores.table().rstrip("\n"))
    m = result["miou"]
    where = f" at threshold {scores.threshold:.2f}" if scores.thresholded else " (label maps)"
    log(f"mIoU{where}: {'-' if m is None else f'{100 * m:.2f}'} over {scores.images} images"
        + (f" ({scores.unmatched_gt} ground-truth images without a prediction)" if scores.unmatched_gt else ""))
    if args.sweep and not scores.thresholded:
        log("(--sweep: label maps have no score to threshold; one mIoU)")
    elif args.sweep:
        log(f"best threshold {result['best_threshold']:.2f}: mIoU {100 * (result['best_miou'] or 0):.2f}")
    if args.out is not None:
        from camfast.utils.io import atomic_write

        out = Path(args.out)
        try:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write(out / "pseudo_labels.json", json.dumps(result, indent=1) + "\n")
            atomic_write(out / "pseudo_labels.md", scores.table())
            if args.sweep and scores.thresholded:
                if P.sweep_figure(scores, out / "pseudo_labels_sweep.png"):
                    log(f"the sweep's curve: {out / 'pseudo_labels_sweep.png'}")
                else:
                    log("(no figure: matplotlib is not installed; the curve is in pseudo_labels.json)")
        except OSError as e:
            return _error(f"cannot write {args.out}: {e}")
    return 0


def _faithfulness(args: argparse.Namespace, log) -> int:
    """``camfast eval faithfulness``: exit 0, or 2 with a message naming the argument."""
    import torch

    from camfast.evaluation import faithfulness as FM
    from camfast.evaluation import map_quality

    other = [f"--{n.replace('_', '-')}" for n in ("root", "metadata", "split", "checkpoints", "pred", "gt",
                                                 "threshold", "labels") if getattr(args, n) is not None]
    if other or args.retrain or args.sweep or args.dataset_opt:
        return _error(f"{', '.join(other) or '--retrain/--sweep/--dataset'} do not apply to faithfulness")
    for name in ("batch_size", "size", "limit", "threads", "steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            return _error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if args.examples < 0:
        return _error(f"--examples must be >= 0, got {args.examples}")
    percentiles = FM.PERCENTILES
    if args.percentiles is not None:
        try:
            percentiles = FM.check_percentiles([float(p) for p in args.percentiles.split(",") if p.strip()])
        except ValueError as e:
            return _error(f"--percentiles: {e}")
    if args.threads:
        torch.set_num_threads(args.threads)
    quick = args.quick
    out = args.out if args.out is not None else "benchmarks/results"
    try:
        from camfast.cli.common import UsageError, load_model, resolve_device

        device = resolve_device(args.device)
        models = [load_model(args.model, device)] if args.model else None
        photos = map_quality.load_photos(args.images) if args.images else None
        if quick and photos is None:
            photos = map_quality.offline_photos(log=lambda line: None)[0][:2]
        map_quality.run(
            out, models=models, photos=photos, methods=args.method,
            size=args.size or (96 if quick else None), limit=args.limit, batch_size=args.batch_size or 16,
            steps=args.steps or (5 if quick else 20), percentiles=(30, 70) if quick and args.percentiles is None
            else percentiles, deletion_baseline=args.deletion_baseline or "zeros",
            insertion_baseline=args.insertion_baseline or "blur", score=args.score or "softmax", device=str(device),
            examples=args.examples, command="camfast eval faithfulness" + (" --quick" if quick else ""),
            progress=args.progress, log=log)
    except (UsageError, FileNotFoundError, ValueError, TypeError, ImportError) as e:
        return _error(str(e))
    except OSError as e:
        return _error(f"cannot write {out}: {e}")
    return 0
