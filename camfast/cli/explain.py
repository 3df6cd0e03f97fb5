"""``camfast explain``: classify images with a pretrained model and draw their class activation maps.

With no images it explains the photos bundled with camfast (``camfast.models.sample_images()``)
with the bundled EfficientNet-Lite0 (ImageNet weights, offline). For each image it prints the
top-k classes, writes ``<out>/<stem>_<method>.png`` (the map in a jet colormap blended on the
image, at the image's own resolution) and finally ``<out>/comparison.png`` (one row per image:
the photo, then each method's overlay, titled with the explained class and its probability).

Images are read by :func:`camfast.utils.image.read_image` (as every camfast command reads
them: EXIF orientation applied, RGB, only regular files, decompression bombs refused; an
image whose shorter side passes 2048 pixels is decoded reduced, to at least 1024). Folders
are searched recursively (:func:`camfast.utils.image.find_images`, the output folder left
out). Methods are those of :mod:`camfast.methods.registry`.

Needs Pillow (reading and writing images); matplotlib is used for the colormap and the
comparison figure when installed (a Pillow grid otherwise).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from camfast.cli import common
from camfast.cli.common import (EXIT_FAILED_IMAGES, EXIT_NO_IMAGES, EXIT_OUTPUT, EXIT_STATUS_HELP, EXIT_USAGE,
                                FATAL_WRITE_ERRNOS, UsageError)
from camfast.methods import registry
from camfast.utils import image as image_io
from camfast.utils.io import atomic_write

ALPHA = 0.5  # weight of the heatmap in the overlay
#: images are decoded reduced to no less than this on their shorter side (when twice as large)
MAX_SIDE = 1024

EPILOG = f"""\
outputs (in --out, default ./camfast-explain):
  <stem>_<method>.png   the map in a jet colormap blended on the image, at the image's resolution
                        (images over 2048 px on their shorter side are decoded reduced, to >= 1024)
  comparison.png        one row per image: the photo, then each method's overlay, a colour bar
printed: the top-k classes of each image and the class explained.

images: files, or folders searched recursively for {', '.join(image_io.IMAGE_SUFFIXES)} (hidden entries
and the --out folder skipped); EXIF orientation is applied; only regular files are read.

{EXIT_STATUS_HELP}

examples:
  camfast explain                                    # the bundled sample photos, default method
  camfast explain photo.jpg -m all -o out            # every method on one photo
  camfast explain photos/ --target "tabby cat"       # one class for every image (names: case ignored)
  camfast explain img.png --model my_models:resnet   # my_models.py in the working directory"""


# ----------------------------------------------------------------------------- arguments
def _method_list(text: str) -> list[str]:
    """``"zoom-cam,grad-cam"`` / ``"all"`` -> method names; argparse reports a bad one."""
    out: list[str] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if item.lower() == "all":
            out.extend(common.available_methods())
            continue
        try:
            out.append(registry.get(item).name)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"unknown method {item!r}; choose from {', '.join(common.method_names())} or 'all'") from None
    if not out:
        raise argparse.ArgumentTypeError("empty method list")
    return out


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("images", nargs="*", metavar="IMAGES",
                        help="image files or folders (default: the sample photos bundled with camfast)")
    parser.add_argument("--method", "-m", action="append", type=_method_list, metavar="METHOD",
                        help=f"any spelling of {common.methods_help()}, or 'all' (those installed); repeat or "
                             f"give a comma list (default: {common.DEFAULT_METHOD})")
    parser.add_argument("--model", default="efficientnet-lite0", metavar="MODEL",
                        help="'efficientnet-lite0' (bundled, ImageNet), 'module:callable' (imported from the "
                             "working directory too) or a TorchScript file (default: efficientnet-lite0)")
    parser.add_argument("--out", "-o", default="camfast-explain", metavar="DIR",
                        help="output folder (default: ./camfast-explain)")
    parser.add_argument("--target", metavar="CLASS",
                        help="class to explain: an index or a class name, case ignored (default: each image's top-1 class)")
    parser.add_argument("--size", type=_positive_int, metavar="PX",
                        help="side of the square model input (default: the model's input size, else 224)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--topk", type=_positive_int, default=5, metavar="K",
                        help="classes printed per image (default: 5)")


# ----------------------------------------------------------------------------- helpers
def _err(msg: str) -> None:
    print(f"camfast explain: {msg}", file=sys.stderr)


def _collect_images(items: list[str], out_dir: Path) -> tuple[list[Path], list[str]]:
    """Files given, plus the images inside the folders given (recursive, sorted; the output
    folder and non-regular files left out: the latter reported)."""
    paths: list[Path] = []
    problems: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            skipped: list[str] = []
            found = image_io.find_images(p, exclude=[out_dir], skipped=skipped)
            problems += [f"{p / rel}: not a regular file (a FIFO, socket or device); skipped" for rel in skipped]
            if not found and not skipped:
                problems.append(f"{p}: no image files in this folder")
            paths.extend(p / rel for rel in found)
        elif p.exists():
            paths.append(p)
        else:
            problems.append(f"{p}: no such file or folder")
    return paths, problems


def _resolve_target(target: str | None, class_names: list[str] | None) -> int | None:
    if target is None:
        return None
    text = target.strip()
    try:
        index = int(text)
    except ValueError:
        index = None
    if index is not None:
        if index < 0 or (class_names is not None and index >= len(class_names)):
            limit = f"0..{len(class_names) - 1}" if class_names is not None else ">= 0"
            raise ValueError(f"--target: class index {index} is out of range ({limit})")
        return index
    if class_names is None:
        raise ValueError(f"--target: the model has no class names; give a class index instead of {text!r}")
    return common.match_class_name(text, class_names, "--target")


def _imagenet_names_or_none() -> list[str] | None:
    from camfast.models import imagenet_class_names
    try:
        return imagenet_class_names()
    except ImportError:
        return None


def _colormap(m: np.ndarray) -> np.ndarray:
    """``(H, W)`` in [0, 1] -> ``(H, W, 3)`` float RGB in [0, 1], jet."""
    try:
        import matplotlib
        return np.asarray(matplotlib.colormaps["jet"](m)[..., :3], dtype=np.float32)
    except ImportError:
        # Jet as piecewise-linear ramps (dark blue -> blue -> cyan -> yellow -> red -> dark red).
        def ramp(c: float) -> np.ndarray:
            return np.clip(1.5 - np.abs(4.0 * m - c), 0.0, 1.0)
        return np.stack([ramp(3.0), ramp(2.0), ramp(1.0)], axis=-1).astype(np.float32)


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """Blend a ``(H, W)`` map in [0, 1] (jet) on a ``(H, W, 3)`` uint8 RGB image -> uint8 RGB."""
    heat = _colormap(np.clip(cam, 0.0, 1.0))
    out = (1.0 - alpha) * (image.astype(np.float32) / 255.0) + alpha * heat
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _save_png(path: Path, rgb) -> None:
    """A uint8 RGB array (or a PIL image) as a PNG, atomically."""
    from PIL import Image
    im = Image.fromarray(rgb) if isinstance(rgb, np.ndarray) else rgb
    atomic_write(path, lambda f: im.save(f, format="PNG"))


@dataclass
class _Row:
    stem: str
    image: np.ndarray                  # uint8 RGB, original resolution
    label: str                         # "class (p)"
    overlays: dict[str, np.ndarray] = field(default_factory=dict)


def _compute(method: str, model, x: torch.Tensor, target: int, image_u8: np.ndarray) -> torch.Tensor:
    """One method's map, from its registry row alone (``image=`` when the method takes one)."""
    spec = registry.get(method)
    kwargs = {"image": torch.from_numpy(np.array(image_u8))[None]} if spec.takes_image else {}
    return spec(model, x, target, **kwargs)


def classify(spec, image: np.ndarray, size: int) -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
    """Resize a uint8 RGB ``(H, W, 3)`` image to ``size x size`` (bicubic; the whole image, no
    crop, so maps cover all of it) and classify it.

    Returns:
        ``(x, small, probs)``: the model input ``(1, 3, size, size)``, the resized uint8 image
        and the ``(num_classes,)`` softmax probabilities.
    """
    from PIL import Image
    small = np.array(Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC))
    device = next((p.device for p in spec.model.parameters()), torch.device("cpu"))
    x = spec.preprocess(torch.from_numpy(small).permute(2, 0, 1)[None].to(device, torch.float32) / 255.0)
    with torch.no_grad():
        logits = spec.model(x)
    if logits.dim() != 2 or logits.shape[0] != 1:
        raise ValueError(f"the model returned shape {tuple(logits.shape)}, expected (1, num_classes)")
    return x, small, logits.float().softmax(1)[0]


def explain_image(spec, image: np.ndarray, methods, size: int, target: int | None = None,
                  *, classified: tuple | None = None) -> dict[str, np.ndarray]:
    """Each method's map of ``target`` (None: the top-1 class) for one uint8 RGB ``(H, W, 3)``
    image, as float32 ``(H, W)`` arrays in [0, 1] at the image's resolution.

    ``classified`` is :func:`classify`'s result for this image and size, to skip a forward."""
    x, small, probs = classified if classified is not None else classify(spec, image, size)
    t = int(probs.argmax()) if target is None else int(target)
    h, w = image.shape[:2]
    maps: dict[str, np.ndarray] = {}
    for method in methods:
        m = _compute(method, spec.model, x, t, small)
        m = F.interpolate(m[:, None].float(), size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        maps[method] = m.clamp(0, 1).cpu().numpy()
    return maps


# ----------------------------------------------------------------------------- comparison figure
def _thumb(rgb: np.ndarray, height: int) -> np.ndarray:
    from PIL import Image
    h, w = rgb.shape[:2]
    width = max(1, round(w * height / h))
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR))


def _drawable(text: str) -> str:
    """``text`` with the characters no installed font can draw written as ``\\uXXXX`` (a CJK
    file name without a CJK font), so matplotlib warns of no missing glyph."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    fonts = []
    for family in _font_families():
        try:
            fonts.append(FT2Font(font_manager.findfont(family, fallback_to_default=False)))
        except (OSError, RuntimeError, ValueError):
            continue
    out = []
    for ch in text:
        if ch in "\n\t " or any(f.get_char_index(ord(ch)) for f in fonts):
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def _font_families() -> list[str]:
    """The default sans-serif font, then any installed font with CJK glyphs (as fallbacks)."""
    from matplotlib import font_manager, rcParams

    cjk = sorted({f.name for f in font_manager.fontManager.ttflist
                  if any(k in f.name for k in ("CJK", "Han Sans", "WenQuanYi", "Droid Sans Fallback", "Unifont"))})
    return [*rcParams["font.sans-serif"][:1], *cjk]


def comparison_figure(rows: list[_Row], methods: list[str]):
    """The comparison as a matplotlib ``Figure``: a row per image (the photo, then each
    method's overlay) and a colour bar of the map values."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure  # a Figure without pyplot: no global state, no GUI

    cols = 1 + len(methods)
    families = _font_families()
    fig = Figure(figsize=(2.6 * cols + 0.6, 2.3 * len(rows)), dpi=100)
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for r, row in enumerate(rows):
        cells = [(row.image, f"{row.stem}\n{row.label}")]
        cells += [(row.overlays[m], m) for m in methods]
        for c, (img, title) in enumerate(cells):
            ax = axes[r][c]
            ax.imshow(_thumb(img, 256))
            ax.set_title(_drawable(title), fontsize=8, family=families)
            ax.axis("off")
    fig.tight_layout(rect=(0, 0, 1 - 0.5 / fig.get_figwidth(), 1))
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), "jet"), ax=axes.ravel().tolist(), fraction=0.03, pad=0.02)
    bar.set_label("map value (0 low, 1 high)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return fig


def _comparison_matplotlib(path: Path, rows: list[_Row], methods: list[str]) -> None:
    fig = comparison_figure(rows, methods)
    atomic_write(path, lambda f: fig.savefig(f, format="png"))


def _comparison_pillow(path: Path, rows: list[_Row], methods: list[str]) -> None:
    from PIL import Image, ImageDraw

    cell_h, pad, text_h = 192, 6, 28
    grid: list[list[tuple[np.ndarray, str]]] = []
    for row in rows:
        cells = [(_thumb(row.image, cell_h), f"{row.stem}: {row.label}")]
        cells += [(_thumb(row.overlays[m], cell_h), m) for m in methods]
        grid.append(cells)
    cols = len(grid[0])
    col_w = [max(cells[c][0].shape[1] for cells in grid) for c in range(cols)]
    width = sum(col_w) + pad * (cols + 1)
    height = len(grid) * (cell_h + text_h + pad) + pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    y = pad
    for cells in grid:
        x = pad
        for c, (img, title) in enumerate(cells):
            draw.text((x, y), title, fill="black")
            canvas.paste(Image.fromarray(img), (x, y + text_h))
            x += col_w[c] + pad
        y += cell_h + text_h + pad
    _save_png(path, canvas)


def write_comparison(path: Path, rows: list[_Row], methods: list[str]) -> str:
    """Write the comparison figure; returns which renderer was used."""
    if importlib.util.find_spec("matplotlib") is not None:
        _comparison_matplotlib(path, rows, methods)
        return "matplotlib"
    _comparison_pillow(path, rows, methods)
    return "pillow"


# ----------------------------------------------------------------------------- main
class _Stop(Exception):
    """The output folder cannot be written: stop the run (exit status 4)."""


def _write_or_stop(write, path: Path) -> str | None:
    """Run ``write()``; an OSError is returned as a message (this output failed), or raised
    as :class:`_Stop` when no later write could succeed either (read-only, full disk)."""
    try:
        write()
    except OSError as e:
        message = f"cannot write {common.describe_os_error(e, path)}"
        if e.errno in FATAL_WRITE_ERRNOS:
            raise _Stop(message) from e
        return message
    return None


def run(args: argparse.Namespace) -> int:
    try:
        import PIL  # noqa: F401
    except ImportError:
        _err("needs Pillow to read and write images: pip install pillow   (or pip install 'camfast[cli]')")
        return EXIT_USAGE
    from camfast.models import sample_images

    methods = list(dict.fromkeys(m for group in (args.method or [[common.DEFAULT_METHOD]]) for m in group))
    try:
        device = common.resolve_device(args.device)
        spec = common.load_model(args.model, device)
        class_names = spec.class_names
        target = _resolve_target(args.target, class_names)
    except (UsageError, ValueError) as e:
        _err(str(e))
        return EXIT_USAGE
    missing = {m: registry.get(m).missing() for m in methods}
    missing = {m: v for m, v in missing.items() if v}
    if missing:
        _err("; ".join(f"method {m} needs {', '.join(v)}, which is not installed" for m, v in missing.items()))
        return EXIT_USAGE

    out_dir = Path(args.out)
    paths, problems = _collect_images(args.images, out_dir) if args.images else (sample_images(), [])
    for p in problems:
        _err(p)
    failed = len(problems)
    if not paths:
        _err("no images found" + (f" in {', '.join(args.images)}" if args.images else ""))
        return EXIT_NO_IMAGES
    size = args.size or spec.input_size or 224
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _err(f"stopped: cannot create the output folder: {common.describe_os_error(e, out_dir)}")
        return EXIT_OUTPUT

    print(f"model {spec.name}, input {size}x{size}, methods {', '.join(methods)}, writing to {out_dir}")
    rows: list[_Row] = []
    used_stems: dict[str, int] = {}
    try:
        for i, path in enumerate(paths, 1):
            print(f"[{i}/{len(paths)}] {path}", flush=True)
            try:
                image = image_io.read_image(path, "RGB", max_side=MAX_SIDE).pixels
            except image_io.ImageReadError as e:
                _err(f"{e}; skipped")
                failed += 1
                continue
            h, w = image.shape[:2]
            try:
                classified = classify(spec, image, size)
            except ValueError as e:
                _err(str(e))
                return EXIT_USAGE
            probs = classified[2]
            num_classes = probs.numel()
            if class_names is None and num_classes == 1000:
                class_names = _imagenet_names_or_none()  # an unnamed 1000-way model: assume ImageNet-1k
            if target is not None and target >= num_classes:
                _err(f"--target: class index {target} is out of range for a model with {num_classes} outputs")
                return EXIT_USAGE

            def name(k: int) -> str:
                return class_names[k] if class_names is not None and k < len(class_names) else f"class {k}"

            k = min(args.topk, num_classes)
            top_p, top_i = probs.topk(k)
            print(f"  {w}x{h}, top-{k}:")
            for rank, (pv, iv) in enumerate(zip(top_p.tolist(), top_i.tolist()), 1):
                print(f"  {rank}. {name(iv):<32s} {pv:.3f}  (class {iv})")
            t = int(top_i[0]) if target is None else target
            stem = path.stem
            used_stems[stem] = used_stems.get(stem, 0) + 1
            if used_stems[stem] > 1:
                stem = f"{stem}-{used_stems[stem]}"
            row = _Row(stem, image, f"{name(t)} ({float(probs[t]):.2f})")
            errors = []
            for method, m in explain_image(spec, image, methods, size, t, classified=classified).items():
                row.overlays[method] = overlay(image, m)
                target_path = out_dir / f"{stem}_{method}.png"
                error = _write_or_stop(lambda: _save_png(target_path, row.overlays[method]), target_path)
                if error:
                    errors.append(error)
            for error in errors:
                _err(error)
            failed += bool(errors)
            print(f"  explained {name(t)!r}: wrote {', '.join(f'{stem}_{m}.png' for m in methods)}"
                  if not errors else f"  explained {name(t)!r}; {len(errors)} file(s) could not be written")
            rows.append(row)

        if rows:
            figure = out_dir / "comparison.png"
            renderer: list[str] = []
            error = _write_or_stop(lambda: renderer.append(write_comparison(figure, rows, methods)), figure)
            if error:
                _err(error)
                failed += 1
            else:
                print(f"wrote {figure} ({len(rows)} image(s) x {len(methods)} method(s), {renderer[0]})")
    except _Stop as e:
        _err(f"stopped: {e}")
        return EXIT_OUTPUT
    if failed:
        _err(f"{failed} input(s) could not be read or written (see above)")
        return EXIT_FAILED_IMAGES
    return 0


__all__ = ["ALPHA", "EPILOG", "MAX_SIDE", "add_parser", "classify", "comparison_figure", "explain_image", "overlay", "run",
           "write_comparison"]
