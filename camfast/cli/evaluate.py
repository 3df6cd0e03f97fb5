"""``camfast eval``: the WSOL benchmark table.

``camfast eval synthetic`` trains the small GAP / TAP / Puzzle-CAM classifiers on
SyntheticWSOL (or reuses their checkpoints), scores every CAM method on the held-out split
and writes ``OUT/wsol_table.{md,json,png}``. ``camfast eval --dataset cub --root DIR --model
SPEC`` scores the inference-only methods on a real dataset with a given model and writes
``OUT/wsol_table-<dataset>.*``. The library part is :mod:`camfast.evaluation.wsol`.

Rows whose method needs an optional module that is not installed (``rcam-crf`` needs
pydensecrf: ``pip install 'camfast[crf]'``) are left out with a note, before any training.

Exit status: 0 done, 2 bad arguments (a missing folder, an unknown model, an unreadable
checkpoint, ...) or a missing requirement (OpenCV, matplotlib).
"""

from __future__ import annotations

import argparse
import sys

DATASET_CHOICES = ("synthetic", "voc", "cub", "imagenet", "openimages")

EPILOG = """\
examples:
  camfast eval synthetic                          # train 3 small models (or reuse them), score, write the table
  camfast eval synthetic --quick --out /tmp/t     # seconds-long smoke run
  camfast eval --dataset cub --root CUB_200_2011 --model efficientnet-lite0 --limit 500
  camfast eval --dataset openimages --root dataset/OpenImages --metadata metadata --model my_models:resnet
outputs: OUT/wsol_table.md (the table, the seeds' numbers, which orderings hold), .json, .png (example maps);
  synthetic: the trained models in OUT/wsol_checkpoints (or --checkpoints), reused on a rerun
rows whose method needs a module not installed here (rcam-crf: pydensecrf) are left out with a note
exit status: 0 done, 2 bad arguments or a missing requirement."""


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("dataset", nargs="?", default=None, choices=DATASET_CHOICES,
                        help="synthetic (default), or a real dataset (same as --dataset)")
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
    parser.add_argument("--out", default="benchmarks/results", help="output folder (default benchmarks/results)")
    parser.add_argument("--checkpoints", default=None,
                        help="synthetic: training checkpoint folder, reused on a rerun (default OUT/wsol_checkpoints)")
    parser.add_argument("--retrain", action="store_true", help="synthetic: train even when checkpoints exist")
    parser.add_argument("--quick", action="store_true", help="synthetic: seconds-long smoke run (tiny data)")
    parser.add_argument("--batch-size", type=int, default=None, help="scoring batch size (default 64 synthetic, 16 real)")
    parser.add_argument("--examples", type=int, default=4, help="held-out images in the figure (default 4)")
    parser.add_argument("--device", default="cpu", help="real datasets: cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")


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
