"""``camfast pseudo-label``: CAM heatmaps and label maps for a folder of images.

The argparse front; the library is split by concern:

- :mod:`~camfast.cli.pseudo_label.config`: :class:`PseudoLabelConfig` and :class:`Summary`;
- :mod:`~camfast.cli.pseudo_label.discovery`: which images (recursive, regular files only,
  the output folder excluded when it lies inside the image folder);
- :mod:`~camfast.cli.pseudo_label.labels`: the labels file, label maps, the VOC palette;
- :mod:`~camfast.cli.pseudo_label.dataset`: decoding (:func:`camfast.utils.image.read_image`:
  EXIF orientation applied, RGB, large JPEGs decoded reduced to the model's size);
- :mod:`~camfast.cli.pseudo_label.outputs`: output paths and atomic writers;
- :mod:`~camfast.cli.pseudo_label.distributed`: ``torchrun`` ranks;
- :mod:`~camfast.cli.pseudo_label.run`: the run loop around a ``RunContext``.

Pipeline: the images are found (sorted, named by their path relative to the root); a
``DataLoader`` decodes each and resizes it bilinearly to ``size x size`` (an unreadable file
becomes an error record, never an exception); the model's ``preprocess`` and the CAM method
(any registered in :mod:`camfast.methods.registry`) run on the batch; each map is upsampled
bilinearly (``align_corners=False``) to the image's ORIGINAL size and written atomically, so
an interrupted run leaves no partial file and a rerun skips every image whose outputs all
exist.

Label map: per pixel, the argmax over ``[threshold, cam_k1, cam_k2, ...]`` (the background
score is the constant ``threshold``; ties go to the background), as IRN / Puzzle-CAM turn
CAMs into pseudo-labels; with labels the default threshold is 0.15 (IRN's
``cam_eval_thres``). With ``crf=True`` those scores, divided by their sum per pixel, are
refined by :func:`camfast.crf.refine` on the original image before the argmax (a method
with its own CRF uses it instead).

Batches are fixed blocks of ``batch_size`` consecutive images of the sorted list. Under
``torchrun`` rank ``r`` takes the blocks ``b`` with ``b % world_size == r``; counts and
failures are gathered for the summary, written by rank 0, which also holds the output
folder's lock. N processes write the same bytes as one (at the same torch thread count).
"""

from __future__ import annotations

import argparse
import os
import sys

from camfast.cli import common
from camfast.cli.common import (EXIT_FAILED_IMAGES, EXIT_NO_IMAGES, EXIT_STATUS_HELP, EXIT_USAGE,
                                OutputStopped, UsageError)
from camfast.cli.pseudo_label.config import FORMATS, PseudoLabelConfig, Summary
from camfast.cli.pseudo_label.discovery import find_images
from camfast.cli.pseudo_label.labels import label_map, parse_labels, voc_palette
from camfast.cli.pseudo_label.outputs import TMP_PREFIX, output_paths
from camfast.cli.pseudo_label.run import NoImagesFound, run_pseudo_label
from camfast.utils.progress import MODES as PROGRESS_MODES

__all__ = [
    "EXIT_FAILED_IMAGES", "FORMATS", "PseudoLabelConfig", "Summary", "TMP_PREFIX", "UsageError", "add_parser",
    "find_images", "label_map", "output_paths", "parse_labels", "run", "run_pseudo_label", "voc_palette",
]

EPILOG = f"""\
outputs (<stem> = image path relative to --images, without its suffix):
  OUT/heatmaps/<stem>.png        top-1 class map, 16-bit grayscale at the image's size (value * 65535)
  OUT/heatmaps/<stem>_c<k>.png   with --labels: one map per listed class k
  OUT/heatmaps/<stem>.npy        with --format npy: float16 (H, W), or (K, H, W) with --labels
  OUT/cam/<stem>.npy             with --format irn: IRN's make_cam.py file, np.save of a dict {{"keys": the classes
                                 (0-based, int64), "cam": float32 (K, ceil(H/4), ceil(W/4)), "high_res": float32
                                 (K, H, W)}}; a pickle: readers need np.load(path, allow_pickle=True).item()
  OUT/labels/<stem>.png          with --labels or --threshold: 0 = background, class k = k + 1; an 8-bit
                                 VOC-palette PNG when every label in the image is <= 255 (class < 255),
                                 else 16-bit grayscale with the same values (such maps look black in a viewer)
  OUT/summary.json               counts, failures, images/s, settings, exit_code (also after Ctrl-C or a stop)
  OUT/.camfast.lock              held while a run writes here: a second run into OUT exits (status 4)

images: every regular file with an image suffix under --images, in subfolders too (hidden ones and the
--out folder, when it lies inside --images, are skipped); EXIF orientation is applied.

--labels FILE: one line per image, "relative/path.jpg cls1 cls2 ..." (class indices or the model's class
names, case ignored); separate a path that holds spaces from its classes with a TAB; a UTF-8 BOM is fine;
images without a line are skipped with a warning. A .npy FILE is VOC's cls_labels.npy (IRN's {{image_id: 20-dim
multi-hot}}; read without running code from it), its ids matched to the image paths without their suffix.

{EXIT_STATUS_HELP}

--scales / --flip / --format irn: the maps are IRN's multi-scale recipe (camfast.multiscale: each scale's batch
holds the image and its flip, maps summed, each class divided by its max + 1e-5) computed on each image at its
own size, one image per call (--size is not used); --format irn defaults to --scales 1.0,0.5,1.5,2.0 --flip.

distributed: torchrun --nproc-per-node N -m camfast.cli pseudo-label ... shards the images by rank.

examples:
  camfast pseudo-label --images photos --out pl
  camfast pseudo-label --images voc/JPEGImages --labels train_cls.txt --out pl --method layer-cam --crf"""


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("--images", required=True, help="folder of images (searched recursively)")
    parser.add_argument("--out", required=True, help="output folder (created; existing outputs are skipped)")
    parser.add_argument("--method", default=common.DEFAULT_METHOD, type=common.method_type, metavar="METHOD",
                        help=f"CAM method, any spelling: {common.methods_help()} (default {common.DEFAULT_METHOD})")
    parser.add_argument("--labels", default=None, metavar="FILE",
                        help="image-level classes, one line per image: 'path cls1 cls2 ...', or VOC's cls_labels.npy "
                        "(see below); all of an image's classes are computed in one call")
    parser.add_argument("--model", default="efficientnet-lite0", metavar="MODEL",
                        help="'efficientnet-lite0' (bundled, default), 'module:callable' (imported from the "
                        "working directory too), or a TorchScript file")
    parser.add_argument("--batch-size", type=int, default=16, metavar="N", help="images per batch (default 16)")
    parser.add_argument("--size", type=int, default=None, metavar="PX",
                        help="side the images are resized to for the model (default: the model's input size, "
                        "else 224)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="background score for label maps (default 0.15 with --labels; without --labels a "
                        "label map is written only when this is given)")
    parser.add_argument("--crf", action="store_true", help="refine label maps with a dense CRF (pydensecrf2); "
                        "a method with its own CRF (one whose function takes crf=) uses that instead")
    parser.add_argument("--workers", type=int, default=0, metavar="N",
                        help="image-decoding processes (default 0: in the main process)")
    parser.add_argument("--format", default="png", choices=FORMATS, help="heatmap format (default png; irn: IRN's cam .npy dicts, see below)")
    parser.add_argument("--scales", type=_scales, default=None, metavar="S1,S2,...",
                        help="multi-scale maps at these scales of each image (IRN: 1.0,0.5,1.5,2.0)")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                        help="add each scale's horizontal flip (default: on with --format irn, else off)")
    parser.add_argument("--overwrite", action="store_true", help="recompute images whose outputs exist")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available; under "
                        "torchrun, cuda:LOCAL_RANK)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="torch threads per process on CPU (default: cores / processes on this node)")
    parser.add_argument("--progress", default="auto", choices=PROGRESS_MODES,
                        help="progress display (default auto: a bar on a terminal, else lines)")
    parser.add_argument("--log-every", type=int, default=100, metavar="N",
                        help="images between progress lines (default 100)")


def _scales(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as 1.0,0.5,1.5,2.0, got {text!r}")
    if not values or any(not (v > 0 and v < float("inf")) for v in values):
        raise argparse.ArgumentTypeError(f"scales must be positive numbers, got {text!r}")
    return values


def _err(message: str) -> None:
    print(f"camfast pseudo-label: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    config = PseudoLabelConfig(
        images=args.images, out=args.out, method=args.method, labels=args.labels, model=args.model,
        batch_size=args.batch_size, size=args.size, threshold=args.threshold, crf=args.crf, workers=args.workers,
        format=args.format, overwrite=args.overwrite, device=args.device, threads=args.threads,
        progress=args.progress, log_every=args.log_every, scales=args.scales, flip=args.flip)
    try:
        summary = run_pseudo_label(config)
    except NoImagesFound as e:
        _err(str(e))
        return EXIT_NO_IMAGES
    except UsageError as e:
        _err(f"error: {e}")
        return EXIT_USAGE
    except OutputStopped as e:
        _err(f"stopped: {e}")
        return common.EXIT_OUTPUT
    if os.environ.get("RANK", "0") != "0":  # under torchrun: rank 0 reports for all
        return summary.exit_code
    if summary.stopped:
        _err(f"stopped: {summary.stopped}")
    _err(f"{summary.written} written, {summary.skipped} already done, {summary.failed} failed, "
         f"{summary.unlabelled} without labels; {summary.images_per_s:.1f} images/s ({summary.world_size} "
         f"process{'es' if summary.world_size > 1 else ''}); summary in {config.out / 'summary.json'}")
    if summary.failed:
        _err(f"{summary.failed} image(s) could not be read or written:")
        for f in summary.failures:
            print(f"  {f['path']}: {f['error']}", file=sys.stderr)
    return summary.exit_code
