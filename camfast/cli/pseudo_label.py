"""``camfast pseudo-label``: CAM heatmaps and label maps for a folder of images.

Exit status: 0 when every image was written or already done; 3 when some images could
not be read (each reported on stderr by path, and listed in ``OUT/summary.json``; all the
others are written); 2 for bad arguments. Runs under ``torchrun`` unchanged: each process
takes its share of the images. The library part is :mod:`camfast.cli.pseudolabel`.
"""

from __future__ import annotations

import argparse
import os
import sys

from camfast.cli.pseudolabel import EXIT_FAILED_IMAGES, FORMATS, METHODS

EPILOG = f"""\
outputs (<stem> = image path relative to --images, without its suffix):
  OUT/heatmaps/<stem>.png        top-1 class map, 16-bit grayscale at the image's size (value * 65535)
  OUT/heatmaps/<stem>_c<k>.png   with --labels: one map per listed class k
  OUT/heatmaps/<stem>.npy        with --format npy: float16 (H, W), or (K, H, W) with --labels
  OUT/labels/<stem>.png          with --labels or --threshold: VOC-palette PNG, 0 = background, class k = k + 1
  OUT/summary.json               counts, failures, images/s, settings

--labels FILE: one line per image, "relative/path.jpg cls1 cls2 ..." (class indices or the model's class
names); images without a line are skipped with a warning.
exit status: 0 ok, {EXIT_FAILED_IMAGES} some images could not be read (the others are written), 2 bad arguments.
distributed: torchrun --nproc-per-node N -m camfast.cli pseudo-label ... shards the images by rank."""


def _method(text: str) -> str:
    from camfast.methods import registry

    try:
        return registry.get(text).name
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("--images", required=True, help="folder of images (searched recursively)")
    parser.add_argument("--out", required=True, help="output folder (created; existing outputs are skipped)")
    parser.add_argument("--method", default="zoom-cam", type=_method, metavar="METHOD",
                        help=f"CAM method: {', '.join(METHODS)} (default zoom-cam)")
    parser.add_argument("--labels", default=None, metavar="FILE",
                        help="image-level classes, one line per image: 'path cls1 cls2 ...'")
    parser.add_argument("--model", default="efficientnet-lite0", metavar="SPEC",
                        help="'efficientnet-lite0' (bundled, default), 'module:callable', or a TorchScript file")
    parser.add_argument("--batch-size", type=int, default=16, metavar="N", help="images per batch (default 16)")
    parser.add_argument("--size", type=int, default=None, metavar="PX",
                        help="side the images are resized to for the model (default: the model's input size, "
                        "else 224)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="background score for label maps (default 0.15 with --labels; without --labels a "
                        "label map is written only when this is given)")
    parser.add_argument("--crf", action="store_true", help="refine label maps with a dense CRF (pydensecrf2); "
                        "with --method rcam, rCAM's own CRF")
    parser.add_argument("--workers", type=int, default=0, metavar="N",
                        help="image-decoding processes (default 0: in the main process)")
    parser.add_argument("--format", default="png", choices=FORMATS, help="heatmap format (default png)")
    parser.add_argument("--overwrite", action="store_true", help="recompute images whose outputs exist")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available; under "
                        "torchrun, cuda:LOCAL_RANK)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="torch threads per process on CPU (default: cores / processes on this node)")
    parser.add_argument("--progress", default="auto", choices=("auto", "bar", "lines", "none"),
                        help="progress display (default auto: a bar on a terminal, else lines)")
    parser.add_argument("--log-every", type=int, default=100, metavar="N",
                        help="images between progress lines (default 100)")


def run(args: argparse.Namespace) -> int:
    from camfast.cli.pseudolabel import PseudoLabelConfig, UsageError, run_pseudo_label

    config = PseudoLabelConfig(
        images=args.images, out=args.out, method=args.method, labels=args.labels, model=args.model,
        batch_size=args.batch_size, size=args.size, threshold=args.threshold, crf=args.crf, workers=args.workers,
        format=args.format, overwrite=args.overwrite, device=args.device, threads=args.threads,
        progress=args.progress, log_every=args.log_every)
    try:
        summary = run_pseudo_label(config)
    except UsageError as e:
        print(f"camfast pseudo-label: error: {e}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") != "0":  # under torchrun: rank 0 reports for all
        return summary.exit_code
    print(f"camfast pseudo-label: {summary.written} written, {summary.skipped} already done, "
          f"{summary.failed} failed, {summary.unlabelled} without labels; {summary.images_per_s:.1f} images/s "
          f"({summary.world_size} process{'es' if summary.world_size > 1 else ''}); summary in "
          f"{config.out / 'summary.json'}", file=sys.stderr)
    if summary.failed:
        print(f"camfast pseudo-label: {summary.failed} image(s) could not be read:", file=sys.stderr)
        for f in summary.failures:
            print(f"  {f['path']}: {f['error']}", file=sys.stderr)
    return summary.exit_code
