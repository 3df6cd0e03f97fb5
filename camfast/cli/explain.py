"""``camfast explain``: classify images with a pretrained model and draw their class activation maps.

With no images it explains the photos bundled with camfast (``camfast.models.sample_images()``)
with the bundled EfficientNet-Lite0 (ImageNet weights, offline). For each image it prints the
top-k classes, writes ``<out>/<stem>_<method>.png`` (the map in a jet colormap blended on the
image, at the image's own resolution) and finally ``<out>/comparison.png`` (one row per image:
the photo, then each method's overlay, titled with the explained class and its probability).

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

from camfast.utils.io import atomic_path

from camfast.methods import registry

#: every registered method (camfast.methods.registry), in its order
METHODS = tuple(registry.names())
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
ALPHA = 0.5  # weight of the heatmap in the overlay


# ----------------------------------------------------------------------------- arguments
def _method_list(text: str) -> list[str]:
    """``"zoom-cam,grad-cam"`` / ``"all"`` -> method names; argparse reports a bad one."""
    out: list[str] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if item.lower() == "all":
            out.extend(n for n in METHODS if not registry.get(n).missing())
            continue
        try:
            out.append(registry.get(item).name)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"unknown method {item!r}; choose from {', '.join(METHODS)} or 'all'") from None
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
    parser.add_argument("images", nargs="*", metavar="IMAGES",
                        help="image files or folders (default: the sample photos bundled with camfast)")
    parser.add_argument("--method", "-m", action="append", type=_method_list, metavar="METHOD",
                        help=f"{', '.join(METHODS)} or 'all'; repeat or give a comma list (default: zoom-cam)")
    parser.add_argument("--model", default="efficientnet-lite0", metavar="SPEC",
                        help="'efficientnet-lite0' (bundled, ImageNet), 'module:callable' or a TorchScript "
                             "file (default: efficientnet-lite0)")
    parser.add_argument("--out", "-o", default="camfast-explain", metavar="DIR",
                        help="output folder (default: ./camfast-explain)")
    parser.add_argument("--target", metavar="CLASS",
                        help="class to explain: an index or a class name (default: each image's top-1 class)")
    parser.add_argument("--size", type=_positive_int, metavar="PX",
                        help="side of the square model input (default: the model's input size, else 224)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--topk", type=_positive_int, default=5, metavar="K",
                        help="classes printed per image (default: 5)")


# ----------------------------------------------------------------------------- helpers
def _err(msg: str) -> None:
    print(f"camfast explain: {msg}", file=sys.stderr)


def _collect_images(items: list[str]) -> tuple[list[Path], list[str]]:
    """Files given, plus image files (by suffix, sorted) inside the folders given."""
    paths: list[Path] = []
    problems: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                problems.append(f"{p}: no image files in this folder")
            paths.extend(found)
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
    lowered = [n.lower() for n in class_names]
    exact = [i for i, n in enumerate(lowered) if n == text.lower()]
    if not exact:
        exact = [i for i, n in enumerate(lowered) if text.lower() in n]
    if len(exact) == 1:
        return exact[0]
    if not exact:
        raise ValueError(f"--target: no class named {text!r}")
    shown = ", ".join(f"{i} ({class_names[i]})" for i in exact[:8])
    raise ValueError(f"--target: {text!r} matches several classes: {shown}; give an index")


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


def _atomic_save(path: Path, save) -> None:
    """Write through ``save(tmp_path)`` to a temporary file in the same folder, then rename."""
    with atomic_path(path, prefix=f".{path.stem}-", suffix=".png.tmp") as tmp:
        save(tmp)


def _save_png(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image
    _atomic_save(path, lambda tmp: Image.fromarray(rgb).save(tmp, format="PNG"))


@dataclass
class _Row:
    stem: str
    image: np.ndarray                  # uint8 RGB, original resolution
    label: str                         # "class (p)"
    overlays: dict[str, np.ndarray] = field(default_factory=dict)


def _compute(method: str, model, x: torch.Tensor, target: int, image_u8: np.ndarray, crf: bool) -> torch.Tensor:
    from camfast.methods import registry

    spec = registry.get(method)
    kwargs = {"image": torch.from_numpy(np.array(image_u8))[None]} if spec.takes_image else {}
    if crf and spec.accepts("crf"):
        kwargs["crf"] = True
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
                  crf: bool = False, *, classified: tuple | None = None) -> dict[str, np.ndarray]:
    """Each method's map of ``target`` (None: the top-1 class) for one uint8 RGB ``(H, W, 3)``
    image, as float32 ``(H, W)`` arrays in [0, 1] at the image's resolution.

    ``classified`` is :func:`classify`'s result for this image and size, to skip a forward."""
    x, small, probs = classified if classified is not None else classify(spec, image, size)
    t = int(probs.argmax()) if target is None else int(target)
    h, w = image.shape[:2]
    maps: dict[str, np.ndarray] = {}
    for method in methods:
        m = _compute(method, spec.model, x, t, small, crf)
        m = F.interpolate(m[:, None].float(), size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        maps[method] = m.clamp(0, 1).cpu().numpy()
    return maps


# ----------------------------------------------------------------------------- comparison figure
def _thumb(rgb: np.ndarray, height: int) -> np.ndarray:
    from PIL import Image
    h, w = rgb.shape[:2]
    width = max(1, round(w * height / h))
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR))


def _comparison_matplotlib(path: Path, rows: list[_Row], methods: list[str]) -> None:
    import matplotlib
    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # a Figure without pyplot: no global state, no GUI

    cols = 1 + len(methods)
    fig = Figure(figsize=(2.6 * cols, 2.3 * len(rows)), dpi=100)
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for r, row in enumerate(rows):
        cells = [(row.image, f"{row.stem}\n{row.label}")]
        cells += [(row.overlays[m], m) for m in methods]
        for c, (img, title) in enumerate(cells):
            ax = axes[r][c]
            ax.imshow(_thumb(img, 256))
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    _atomic_save(path, lambda tmp: fig.savefig(tmp, format="png"))


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
    _atomic_save(path, lambda tmp: canvas.save(tmp, format="PNG"))


def write_comparison(path: Path, rows: list[_Row], methods: list[str]) -> str:
    """Write the comparison figure; returns which renderer was used."""
    if importlib.util.find_spec("matplotlib") is not None:
        _comparison_matplotlib(path, rows, methods)
        return "matplotlib"
    _comparison_pillow(path, rows, methods)
    return "pillow"


# ----------------------------------------------------------------------------- main
def run(args: argparse.Namespace) -> int:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        _err("needs Pillow to read and write images: pip install pillow   (or pip install 'camfast[cli]')")
        return 2
    from camfast.models import load_model, sample_images

    methods = list(dict.fromkeys(m for group in (args.method or [["zoom-cam"]]) for m in group))
    try:
        spec = load_model(args.model, args.device)
    except (ImportError, ValueError, TypeError, FileNotFoundError) as e:
        _err(str(e))
        return 2
    class_names = spec.class_names
    try:
        target = _resolve_target(args.target, class_names)
    except ValueError as e:
        _err(str(e))
        return 2

    paths, problems = _collect_images(args.images) if args.images else (sample_images(), [])
    for p in problems:
        _err(p)
    failed = len(problems)
    if not paths:
        _err("no images to explain")
        return 1
    size = args.size or spec.input_size or 224
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    crf = False
    if "rcam" in methods:
        crf = importlib.util.find_spec("pydensecrf") is not None
        if not crf:
            print("note: pydensecrf is not installed; rcam runs without its CRF refinement "
                  "(pip install pydensecrf2 for it)")

    print(f"model {spec.name}, input {size}x{size}, methods {', '.join(methods)}, writing to {out_dir}")
    rows: list[_Row] = []
    used_stems: dict[str, int] = {}
    for i, path in enumerate(paths, 1):
        print(f"[{i}/{len(paths)}] {path}", flush=True)
        try:
            with Image.open(path) as im:
                image = np.asarray(im.convert("RGB"))
        except (OSError, UnidentifiedImageError, ValueError) as e:
            _err(f"{path}: cannot read image ({e}); skipped")
            failed += 1
            continue
        h, w = image.shape[:2]
        try:
            classified = classify(spec, image, size)
        except ValueError as e:
            _err(str(e))
            return 2
        probs = classified[2]
        num_classes = probs.numel()
        if class_names is None and num_classes == 1000:
            class_names = _imagenet_names_or_none()  # an unnamed 1000-way model: assume ImageNet-1k
        if target is not None and target >= num_classes:
            _err(f"--target: class index {target} is out of range for a model with {num_classes} outputs")
            return 2

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
        for method, m in explain_image(spec, image, methods, size, t, crf, classified=classified).items():
            row.overlays[method] = overlay(image, m)
            _save_png(out_dir / f"{stem}_{method}.png", row.overlays[method])
        print(f"  explained {name(t)!r}: wrote {', '.join(f'{stem}_{m}.png' for m in methods)}")
        rows.append(row)

    if rows:
        renderer = write_comparison(out_dir / "comparison.png", rows, methods)
        print(f"wrote {out_dir / 'comparison.png'} ({len(rows)} image(s) x {len(methods)} method(s), {renderer})")
    if failed:
        _err(f"{failed} input(s) could not be read (see above)")
        return 1
    return 0


__all__ = ["METHODS", "add_parser", "classify", "explain_image", "overlay", "run", "write_comparison"]
