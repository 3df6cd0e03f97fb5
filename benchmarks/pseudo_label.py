"""Throughput of ``camfast pseudo-label`` against the model's own forward + backward.

Usage:
    python benchmarks/pseudo_label.py [--batch 16] [--size 224] [--repeat 7] [--images 64]
        [--workers 0] [--device cpu|cuda] [--quick] [--no-write]

With the bundled EfficientNet-Lite0 (``camfast.models.load_model()``, ImageNet weights) in
float32 on the CPU (or the GPU with ``--device cuda``, each call timed to its completion), on
one fixed batch of images (``--batch`` x 3 x ``--size``^2):

* ``model fwd+bwd`` (the limit): forward, then ONE ``torch.autograd.grad`` of the summed
  top-1 logits towards the input (no parameter gradient): what any gradient CAM must pay;
* ``zoom_cam``: ``camfast.zoom_cam`` over every layer ``camfast.find_layers`` returns
  (17 for EfficientNet-Lite0), max fusion, map at the input size: the in-memory work of the
  command per batch.

The two are timed alternately (one call of each per round, ``--repeat`` rounds after
``--warmup`` untimed ones), so drifting load hits both alike; images/s = batch / median.
The target (the product issue): ``zoom_cam`` images/s >= 0.85x the limit's, judged on the
median over rounds of the ratio of the two calls of that round (robust to load that
changes between rounds), printed PASS/MISS (never a failing exit). With ``--classes K`` the
limit is one forward + K backwards and ``zoom_cam`` gets the K classes of each image in one
call; a second target (issue 12): the whole command's images/s >= 0.9x ``zoom_cam``'s.

Then the whole command, end to end: ``run_pseudo_label`` (what ``camfast pseudo-label``
runs) on a folder of ``--images`` generated 500x375 JPEGs (PASCAL VOC's usual size):
Pillow decoding and resizing (``--workers`` loader processes), the CAMs, upsampling to
500x375, 16-bit PNG heatmaps and palette label maps (``--threshold 0.5``) written
atomically; images/s over ``--pipeline-repeat`` runs with ``--overwrite`` (median), also as
a ratio to the limit. The folder and outputs live in a temporary directory.

Writes ``benchmarks/results/pseudo_label-<device>.{json,md}`` (a run replaces an earlier one
with the same batch, size and CPU or GPU), stamped like the other benchmarks (``harness.stamp``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

# The command's process setting (camfast/_command_env.py), made before torch loads so that the
# in-process run_pseudo_label below runs as `camfast pseudo-label` does; the limit and the
# in-memory calls run under it too (measured: the same speed as with spinning waits).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# (imported by pytest after torch, as in the smoke test, it has no effect: the header then says nothing)
WAIT_POLICY = os.environ["OMP_WAIT_POLICY"] if "torch" not in sys.modules else None

import numpy as np  # noqa: E402
import torch  # noqa: E402

import harness  # noqa: E402
from camfast.utils.io import atomic_write  # noqa: E402

OP = "pseudo_label"
TARGET_RATIO = 0.85  # zoom_cam images/s over the limit's, at the same batch
PIPELINE_RATIO = 0.9  # the whole command's images/s over the in-memory zoom_cam calls' (issue 12)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=None, help="images per batch (default 16; 4 with --quick)")
    p.add_argument("--size", type=int, default=None, help="model input side (default 224; 96 with --quick)")
    p.add_argument("--repeat", type=int, default=None, help="timed rounds (default 7; 2 with --quick)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    p.add_argument("--images", type=int, default=None, help="JPEGs for the end-to-end run (default 64; 8 quick)")
    p.add_argument("--workers", type=int, default=0, help="loader processes for the end-to-end run (default 0: on 2 "
                   "cores a decoding process competes with the model's threads)")
    p.add_argument("--pipeline-repeat", type=int, default=None, help="end-to-end runs (default 3; 1 with --quick)")
    p.add_argument("--classes", type=int, default=0, metavar="K",
                   help="--labels with K classes per image (issue 12: 2): the in-memory call is then zoom_cam with "
                   "K classes per image in one call, the command gets a labels file (default 0: top class)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the model runs (default cpu)")
    p.add_argument("--quick", action="store_true", help="small sizes, few repeats: a smoke test; implies --no-write")
    p.add_argument("--no-write", action="store_true", help="print only; leave the results files alone")
    p.add_argument("--results-dir", type=Path, default=harness.RESULTS_DIR, help="default: benchmarks/results")
    args = p.parse_args(argv)
    q = args.quick
    args.batch = args.batch or (4 if q else 16)
    args.size = args.size or (96 if q else 224)
    args.repeat = args.repeat or (2 if q else 7)
    args.images = args.images or (8 if q else 64)
    args.pipeline_repeat = args.pipeline_repeat or (1 if q else 3)
    args.no_write = args.no_write or q
    for name in ("batch", "size", "repeat", "images", "pipeline_repeat"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if args.workers < 0 or args.warmup < 0 or args.classes < 0:
        p.error("--workers, --warmup and --classes must be >= 0")
    return args


def limit_call(model: torch.nn.Module, x: torch.Tensor, k: int = 1) -> Callable[[], Any]:
    """The model's own forward + ``k`` backwards to the input (the top-``k`` classes, one
    ``autograd.grad`` each, the graph kept between them): what any gradient CAM must pay for
    ``k`` classes per image."""

    def limit() -> torch.Tensor:
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            logits = model(x_in)
            top = logits.detach().topk(k, dim=1).indices
            for j in range(k):
                (g,) = torch.autograd.grad(logits.gather(1, top[:, j:j + 1]).sum(), (x_in,), retain_graph=j < k - 1)
        return g

    return limit


def alternate(calls: Mapping[str, Callable[[], Any]], repeat: int, warmup: int,
              progress: Callable[[str], None], device: torch.device = torch.device("cpu")) -> dict[str, Any]:
    """Time every call once per round, ``repeat`` rounds after ``warmup``; ms per call (to
    the call's completion on ``device``)."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(warmup + repeat):
        for name, fn in calls.items():
            harness.synchronize(device)
            t0 = time.perf_counter()
            fn()
            harness.synchronize(device)
            dt = (time.perf_counter() - t0) * 1e3
            if r >= warmup:
                samples[name].append(dt)
        progress(f"round {r + 1}/{warmup + repeat}" + (" (warm-up)" if r < warmup else "") + ": "
                 + ", ".join(f"{n} {s[-1]:.0f} ms" for n, s in samples.items() if s and r >= warmup))
    return {name: _Samples(harness.Timing.from_samples(s), s) for name, s in samples.items()}


class _Samples:
    """A :class:`harness.Timing` and the samples (ms, in round order) it summarises."""

    def __init__(self, timing: harness.Timing, samples: list[float]) -> None:
        self.timing, self.samples = timing, samples

    def __getattr__(self, name: str) -> Any:
        return getattr(self.timing, name)


def make_jpegs(folder: Path, n: int, seed: int = 0) -> None:
    """``n`` 500x375 JPEGs: smooth blobs on noise (content that compresses like a photo)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:375, 0:500].astype(np.float32)
    for i in range(n):
        cx, cy, r = rng.uniform(100, 400), rng.uniform(80, 300), rng.uniform(40, 120)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None]
        colour = rng.uniform(0, 255, 3).astype(np.float32)
        img = rng.normal(110, 25, (375, 500, 3)).astype(np.float32) * (1 - blob) + colour * blob
        sub = folder / f"set{i % 4}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(sub / f"img{i:05d}.jpg", quality=90)


def pipeline(folder: Path, out: Path, args: argparse.Namespace, spec: Any,
             progress: Callable[[str], None]) -> tuple[list[float], dict[str, Any]]:
    """images/s of ``run_pseudo_label`` per run (first run included: model already loaded)."""
    from camfast.cli.pseudo_label import PseudoLabelConfig, run_pseudo_label

    rates = []
    summary = None
    for r in range(args.pipeline_repeat):
        labels = folder.parent / "labels.txt" if args.classes else None
        config = PseudoLabelConfig(images=folder, out=out, batch_size=args.batch, size=args.size, labels=labels,
                                   threshold=None if labels else 0.5, workers=args.workers, overwrite=True,
                                   progress="none", device=args.device)
        t0 = time.perf_counter()
        summary = run_pseudo_label(config, model_spec=spec)
        wall = time.perf_counter() - t0
        if summary.written != args.images:
            raise RuntimeError(f"end-to-end run wrote {summary.written} of {args.images} images")
        rates.append(args.images / wall)
        progress(f"end-to-end run {r + 1}/{args.pipeline_repeat}: {rates[-1]:.2f} images/s ({wall:.1f} s)")
    assert summary is not None
    return rates, {"written": summary.written, "images_per_s_in_loop": summary.images_per_s}


def _classes_of(i: int, k: int) -> tuple[int, ...]:
    """Image ``i``'s K classes (fixed, distinct)."""
    return tuple(sorted({(37 * i + 101 * j) % 1000 for j in range(k)}))


def check_cam(cam: torch.Tensor, batch: int, size: int) -> None:
    if cam.shape != (batch, size, size) or not bool(torch.isfinite(cam).all()):
        raise RuntimeError(f"zoom_cam returned shape {tuple(cam.shape)} or non-finite values")
    if float(cam.min()) < 0 or float(cam.max()) > 1 or float(cam.max()) == 0:
        raise RuntimeError("zoom_cam maps are not in [0, 1] or are all zero")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import camfast
    from camfast.models import load_model

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    device = torch.device(args.device)
    spec = load_model(device=device)
    model = spec.model
    gen = torch.Generator().manual_seed(1)
    x = spec.preprocess(torch.rand(args.batch, 3, args.size, args.size, generator=gen).to(device))
    layers = camfast.find_layers(model)
    check_cam(camfast.zoom_cam(model, x, layers=layers), args.batch, args.size)  # check before timing
    # with --classes K the zoom_cam row is K classes per image in ONE call (issue 12 item 1)
    target = None
    if args.classes:  # the same K classes per image as the labels file of the end-to-end run
        target = [list(_classes_of(i, args.classes)) for i in range(args.batch)]
    calls = {"limit": limit_call(model, x, max(args.classes, 1)),
             "zoom_cam": lambda: camfast.zoom_cam(model, x, target, layers=layers)}
    log(f"timing {', '.join(calls)}: batch {args.batch}, {args.size}x{args.size}, {len(layers)} layers")
    timings = alternate(calls, args.repeat, args.warmup, log, device)
    rows = []
    for name, t in timings.items():
        rows.append({"provider": name, "median_ms": t.median_ms, "p20_ms": t.p20_ms, "p80_ms": t.p80_ms,
                     "min_ms": t.min_ms, "n": t.n, "images_per_s": args.batch / (t.median_ms * 1e-3)})
    limit_rate = rows[0]["images_per_s"]
    # the ratio of the two calls of the same round, median over rounds: load that drifts
    # between rounds cancels out (the target uses this figure)
    paired = [lt / zt for lt, zt in zip(timings["limit"].samples, timings["zoom_cam"].samples)]
    rows[1]["paired_vs_limit"] = float(np.median(paired))
    rows[1]["paired_each"] = paired
    with tempfile.TemporaryDirectory(prefix="camfast-bench-") as tmp:
        folder, out = Path(tmp) / "images", Path(tmp) / "out"
        log(f"writing {args.images} 500x375 JPEGs ...")
        make_jpegs(folder, args.images)
        if args.classes:
            rels = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.jpg"))
            (folder.parent / "labels.txt").write_text("".join(
                f"{rel} {' '.join(map(str, _classes_of(i, args.classes)))}\n" for i, rel in enumerate(rels)))
        rates, extra = pipeline(folder, out, args, spec, log)
    rows.append({"provider": "camfast pseudo-label", "images_per_s": float(np.median(rates)),
                 "runs_images_per_s": rates, "n": len(rates), **extra})
    for row in rows:
        row["vs_limit"] = row["images_per_s"] / limit_rate
    return {"rows": rows, "layers": len(layers), "model": spec.name}


def verdicts(rows: Sequence[Mapping[str, Any]], batch: int, size: int, classes: int = 0) -> list[dict[str, Any]]:
    row = next(r for r in rows if r["provider"] == "zoom_cam")
    met = row["paired_vs_limit"] >= TARGET_RATIO
    what = "forward+backward" if classes <= 1 else f"forward+{classes} backwards"
    out = [{"target": f"zoom_cam images/s >= {TARGET_RATIO:g}x the model's {what}",
            "case": f"batch {batch}, {size}px" + (f", {classes} classes" if classes else ""),
            "result": "PASS" if met else "MISS",
            "detail": f"{row['paired_vs_limit']:.3f}x (median of per-round ratios; ratio of medians "
                      f"{row['vs_limit']:.3f}x)"}]
    # issue 12: the whole command against the same CAM calls on decoded tensors
    cmd = next(r for r in rows if r["provider"] == "camfast pseudo-label")
    share = cmd["images_per_s"] / row["images_per_s"]
    out.append({"target": f"camfast pseudo-label images/s >= {PIPELINE_RATIO:g}x the in-memory zoom_cam calls",
                "case": f"batch {batch}, {size}px" + (f", {classes} classes" if classes else ""),
                "result": "PASS" if share >= PIPELINE_RATIO else "MISS", "detail": f"{share:.3f}x"})
    return out


def table(rows: Sequence[Mapping[str, Any]]) -> str:
    header = ["provider", "images/s", "vs limit", "median ms/batch", "p20 ms", "p80 ms", "n"]
    body = [[r["provider"], f"{r['images_per_s']:.2f}", f"{r['vs_limit']:.3f}x",
             harness._fmt(r.get("median_ms"), ".0f"), harness._fmt(r.get("p20_ms"), ".0f"),
             harness._fmt(r.get("p80_ms"), ".0f"), str(r["n"])] for r in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    fmt = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, body)])


def header(run: Mapping[str, Any]) -> str:
    c, info = run["config"], run["stamp"]
    return "\n".join([
        f"{run['model']} ({run['layers']} layers), batch {c['batch']}, {c['size']}x{c['size']} float32 "
        f"on {c.get('device', 'cpu')} "
        f"({harness.machine_text(info['machine'])})",
        f"limit = forward + {'ONE autograd.grad' if c.get('classes', 0) <= 1 else str(c['classes']) + ' autograd.grad calls'}"
        f" of the summed top-{max(c.get('classes', 0), 1)} logits to the input; limit and zoom_cam "
        f"alternate, median of {c['repeat']} rounds after {c['warmup']} warm-up",
        f"camfast pseudo-label = run_pseudo_label on {c['images']} generated 500x375 JPEGs, {c['workers']} loader "
        f"worker(s), heatmap + label PNGs at 500x375, median of {c['pipeline_repeat']} runs (wall time)"
        + (f"; OMP_WAIT_POLICY={c['omp_wait_policy']} (the command's setting)" if c.get("omp_wait_policy") else ""),
        f"{info['date']}, {harness.commit_text(info['git'])}, torch {info['versions']['torch']}, "
        f"python {info['versions']['python']}, {harness.build_text(info['native'])}",
    ])


def render_markdown(data: Mapping[str, Any]) -> str:
    device_type = data.get("device_type", "cpu")
    out = [f"# camfast pseudo-label throughput ({device_type})", "",
           f"Generated from `pseudo_label-{device_type}.json` by `benchmarks/pseudo_label.py`; do not edit.", ""]
    for run in sorted(data["runs"], key=lambda r: r["stamp"]["date"], reverse=True):
        out += ["## " + run["stamp"]["date"], "", "```text", header(run), "```", "", table(run["rows"]), "",
                "```text", harness.targets_text(run["targets"]), "```", ""]
    return "\n".join(out)


def write_results(run: dict[str, Any], results_dir: Path) -> tuple[Path, Path]:
    results_dir.mkdir(parents=True, exist_ok=True)
    device_type = run["config"].get("device", "cpu")
    json_path, md_path = harness.results_paths(OP, device_type, results_dir)
    key = lambda r: (r["config"]["batch"], r["config"]["size"], r["config"].get("classes", 0),  # noqa: E731
                     r["stamp"]["machine"].get("gpu") or r["stamp"]["machine"]["cpu"])
    with harness._locked(results_dir):
        data = json.loads(json_path.read_text()) if json_path.exists() else {"op": OP, "device_type": device_type,
                                                                             "runs": []}
        data["runs"] = [r for r in data["runs"] if key(r) != key(run)] + [run]
        atomic_write(json_path, json.dumps(data, indent=1) + "\n", fsync=True)
        atomic_write(md_path, render_markdown(data), fsync=True)
    return json_path, md_path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = harness.stamp(torch.device(args.device))
    load = harness.OtherLoad()
    measured = measure(args)
    info["machine"]["other_busy_cores"] = load.cores()
    config = {k: getattr(args, k) for k in ("batch", "size", "repeat", "warmup", "images", "workers",
                                            "pipeline_repeat", "quick", "device", "classes")}
    config["omp_wait_policy"] = WAIT_POLICY
    run = {"stamp": info, "config": config, **measured}
    run["targets"] = verdicts(run["rows"], args.batch, args.size, args.classes)
    if harness.busy(info["machine"]):
        harness.warn(f"other processes kept {info['machine']['other_busy_cores']:.2f} cores busy during the run: "
                     "the timings are noisy (the alternating rounds keep the ratio fairer than the absolute figures)")
    print()
    print(header(run))
    print()
    print(table(run["rows"]))
    print()
    print(harness.targets_text(run["targets"]))
    if not args.no_write:
        for path in write_results(run, args.results_dir):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
