"""Where rCAM's time goes: ``camfast.rcam`` per image, split into its stages.

Usage:
    python benchmarks/rcam_breakdown.py [--batches 1,4] [--size 224] [--repeat N] [--warmup N]
        [--threads N] [--no-crf] [--random-weights] [--quick] [--no-write]

Runs the real ``camfast.rcam`` (EfficientNet-Lite0 with its ImageNet weights, on
scikit-image's bundled photos resized to ``--size``; float32 on the CPU) and times its
stages from outside, without editing the pipeline: wrappers around the functions
``camfast.rcam`` calls (``camfast.rcam.pca_guide``, ``camfast.rcam.variogram_radius``,
``camfast.ops.guided_filter``, ``camfast.crf.refine``) and forward hooks on the model add
up the wall time spent in each; everything else (the bilinear resizes, the CAMs from the
classifier weights, the softmax, the fusion and normalisations) is ``other`` = total - the
rest. Stages:

* ``model I1``, ``model I2``: the forwards at the input size and at ``scales[1]`` = 2x (no
  backward: rCAM's CAMs come from the classifier's weights, ``camfast.cam``-style);
* ``pca guides``: the per-image PCA of the shape features at both scales;
* ``variogram``: the guided-filter radius per image and step;
* ``guided filter``: every ``camfast.ops.guided_filter`` call (one per image and step);
* ``crf``: the dense CRF (pydensecrf), per image;
* ``other``.

Reports the median over ``--repeat`` calls (after ``--warmup``) of each stage's time per
image (``ms/img``, the call's time divided by the batch) and its share of the total.
Unless ``--no-write``, merges the rows into ``benchmarks/results/rcam_breakdown-cpu.json``
(a row replaces an earlier one with the same model, batch, size, crf flag and machine),
rewrites ``rcam_breakdown-cpu.md``, stamped like the op benchmarks (``harness.stamp``), and
draws ``rcam_breakdown-cpu.png`` (stacked bars, matplotlib, skipped if it is missing).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import camfast  # noqa: E402
import camfast.crf  # noqa: E402
import camfast.ops  # noqa: E402
from camfast.utils.io import atomic_path, atomic_write  # noqa: E402
import harness  # noqa: E402

# the module (``camfast.rcam`` the attribute is the function)
rcam_module = importlib.import_module("camfast.methods.highres")
OP = "rcam_breakdown"
STAGES = ("model I1", "model I2", "pca guides", "variogram", "guided filter", "crf", "other")
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")


# --------------------------------------------------------------------------- inputs


def load_model(random_weights: bool) -> tuple[torch.nn.Module, str]:
    from camfast.models import efficientnet_lite0

    if not random_weights:
        try:
            return efficientnet_lite0(pretrained=True).eval(), "efficientnet-lite0 (ImageNet weights)"
        except ModuleNotFoundError as err:
            harness.warn(f"{err}; using random weights")
    torch.manual_seed(0)
    return efficientnet_lite0(pretrained=False).eval(), "efficientnet-lite0 (random weights)"


def load_images(batch: int, size: int) -> torch.Tensor:
    """``(batch, 3, size, size)`` RGB in [0, 1]: scikit-image's photos, cycled; noise without it."""
    try:
        import skimage.data
    except ImportError:
        return torch.rand((batch, 3, size, size), generator=torch.Generator().manual_seed(0))
    imgs = []
    for i in range(batch):
        a = getattr(skimage.data, PHOTOS[i % len(PHOTOS)])()
        if a.ndim == 2:
            a = a[..., None].repeat(3, -1)
        t = torch.from_numpy(a[..., :3].copy()).permute(2, 0, 1)[None].float() / 255
        imgs.append(F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True))
    return torch.cat(imgs).clamp(0, 1)


# --------------------------------------------------------------------------- timing


class StageClock:
    """Wall time per stage of one ``camfast.rcam`` call, from wrappers and model hooks."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self.model_calls = 0
        self._t0 = 0.0

    def wrap(self, stage: str, fn):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[stage] += time.perf_counter() - t0
        return timed

    def model_pre(self, module, inputs) -> None:
        self._t0 = time.perf_counter()

    def model_post(self, module, inputs, output) -> None:
        # rcam's calls, in order: I1 (which also finds the stride-8 shape layer), I2
        stage = ("model I1", "model I2")[min(self.model_calls, 1)]
        self.seconds[stage] += time.perf_counter() - self._t0
        self.model_calls += 1


@contextlib.contextmanager
def instrumented(model: torch.nn.Module, clock: StageClock) -> Iterator[None]:
    patches = [(rcam_module, "pca_guide", "pca guides"), (rcam_module, "variogram_radius", "variogram"),
               (camfast.ops, "guided_filter", "guided filter"), (camfast.crf, "refine", "crf")]
    saved = [(mod, name, getattr(mod, name)) for mod, name, _ in patches]
    hooks = [model.register_forward_pre_hook(clock.model_pre), model.register_forward_hook(clock.model_post)]
    try:
        for mod, name, stage in patches:
            setattr(mod, name, clock.wrap(stage, getattr(mod, name)))
        yield
    finally:
        for mod, name, fn in saved:
            setattr(mod, name, fn)
        for h in hooks:
            h.remove()


def timed_call(model: torch.nn.Module, x: torch.Tensor, crf: bool) -> dict[str, float]:
    clock = StageClock()
    with instrumented(model, clock):
        t0 = time.perf_counter()
        rcam_module.rcam(model, x, crf=crf)
        total = time.perf_counter() - t0
    if clock.model_calls != 2:
        raise RuntimeError(f"expected 2 model calls in camfast.rcam, saw {clock.model_calls}: "
                           "update the stage labels in StageClock.model_post")
    clock.seconds["other"] = total - sum(v for k, v in clock.seconds.items() if k != "other")
    return {**clock.seconds, "total": total}


def measure(model: torch.nn.Module, model_name: str, batch: int, size: int, crf: bool, repeat: int,
            warmup: int) -> dict[str, Any]:
    x = load_images(batch, size)
    x = (x * 255 - 127) / 128  # EfficientNet-Lite's input normalisation
    calls = []
    for i in range(warmup + repeat):
        t0 = time.perf_counter()
        got = timed_call(model, x, crf)
        tag = "warm-up" if i < warmup else f"{i - warmup + 1}/{repeat}"
        print(f"  batch {batch}: call {tag}: {1e3 * (time.perf_counter() - t0):.0f} ms", flush=True)
        if i >= warmup:
            calls.append(got)
    per_img = {k: 1e3 * statistics.median(c[k] for c in calls) / batch for k in (*STAGES, "total")}
    spread = [1e3 * c["total"] / batch for c in calls]
    return {"model": model_name, "batch": batch, "size": size, "crf": crf, "repeat": repeat, "warmup": warmup,
            "ms_per_image": per_img, "total_min_ms": min(spread), "total_max_ms": max(spread),
            "device": "cpu", "device_name": harness.cpu_model()}


# --------------------------------------------------------------------------- reporting


def table(rows: Sequence[Mapping[str, Any]]) -> str:
    header = ["stage", *(f"batch {r['batch']} ms/img" for r in rows), *(f"batch {r['batch']} share" for r in rows)]
    body = []
    for s in (*STAGES, "total"):
        body.append([s, *(f"{r['ms_per_image'][s]:.1f}" for r in rows),
                     *(f"{100 * r['ms_per_image'][s] / r['ms_per_image']['total']:.1f}%" for r in rows)])
    body.append(["total min..max", *(f"{r['total_min_ms']:.1f}..{r['total_max_ms']:.1f}" for r in rows),
                 *("" for _ in rows)])
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, body)])


def header_text(config: Mapping[str, Any], info: Mapping[str, Any]) -> str:
    return "\n".join([
        f"camfast.rcam: {config['model']}, {config['size']}x{config['size']} input (I2 at 2x), float32 on cpu, "
        f"crf={config['crf']} ({harness.machine_text(info['machine'])})",
        f"median of {config['repeat']} calls after {config['warmup']} warm-up, per image (call time / batch); "
        "stages timed by wrappers around the functions rcam calls and hooks on the model",
        f"{info['date']}, {harness.commit_text(info['git'])}, torch {info['versions']['torch']}, "
        f"python {info['versions']['python']}, {harness.build_text(info['native'])}",
    ])


def render_markdown(data: Mapping[str, Any]) -> str:
    out = [f"# rCAM time breakdown ({data['device_type']})", "",
           f"Generated from `{OP}-{data['device_type']}.json` by `benchmarks/rcam_breakdown.py`; do not edit.", "",
           "Stages: `model I1` / `model I2` (forwards at 1x and 2x; rCAM needs no backward), `pca guides`, `variogram` (radius per "
           "image and step), `guided filter` (`camfast.ops.guided_filter`, one call per image and step), "
           "`crf` (pydensecrf), `other` (resizes, CAMs, softmax, fusion, normalisation).", ""]
    for run_id, run in sorted(data["runs"].items(), key=lambda kv: kv[1]["stamp"]["date"], reverse=True):
        rows = sorted((r for r in data["rows"] if r["run"] == run_id), key=lambda r: r["batch"])
        out += ["## " + run["stamp"]["date"], "", "```text", header_text(run["config"], run["stamp"]), "```", "",
                table(rows), ""]
        if run.get("figure"):
            out += [f"![stacked stage times]({run['figure']})", ""]
    return "\n".join(out)


def row_key(row: Mapping[str, Any]) -> tuple:
    return (row["model"], row["batch"], row["size"], row["crf"], row["device"], row["device_name"])


def draw(rows: Sequence[Mapping[str, Any]], path: Path, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    labels = [f"batch {r['batch']}" for r in rows]
    bottom = [0.0] * len(rows)
    for stage in STAGES:
        vals = [r["ms_per_image"][stage] for r in rows]
        ax.bar(labels, vals, bottom=bottom, label=stage)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_ylabel("ms per image")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return True


def write_results(rows: list[dict[str, Any]], config: dict[str, Any], info: dict[str, Any],
                  results_dir: Path) -> list[Path]:
    results_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = harness.results_paths(OP, "cpu", results_dir)
    png_path = json_path.with_suffix(".png")
    run_id = f"{info['date']}-{os.getpid()}"
    written = [json_path, md_path]
    with harness._locked(results_dir):
        data = json.loads(json_path.read_text()) if json_path.exists() else {
            "op": OP, "device_type": "cpu", "runs": {}, "rows": []}
        new = [{**r, "run": run_id} for r in rows]
        keys = {row_key(r) for r in new}
        data["rows"] = [r for r in data["rows"] if row_key(r) not in keys] + new
        data["runs"][run_id] = {"stamp": info, "config": config}
        live = {r["run"] for r in data["rows"]}
        data["runs"] = {k: v for k, v in data["runs"].items() if k in live}
        title = f"camfast.rcam per image, {config['model']}, {config['size']}px, crf={config['crf']}"
        if draw(sorted(rows, key=lambda r: r["batch"]), png_path, title):
            for run in data["runs"].values():
                run.pop("figure", None)
            data["runs"][run_id]["figure"] = png_path.name
            written.append(png_path)
        atomic_write(json_path, json.dumps(data, indent=1) + "\n", fsync=True)
        atomic_write(md_path, render_markdown(data), fsync=True)
    return written


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", default="1,4", help="comma-separated batch sizes (default 1,4)")
    p.add_argument("--size", type=int, default=224, help="input size I1 (default 224; I2 is twice that)")
    p.add_argument("--repeat", type=int, default=5, help="timed calls per batch size (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls first (default 1)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's own setting)")
    p.add_argument("--no-crf", action="store_true", help="stop at rCAM3 (no dense CRF)")
    p.add_argument("--random-weights", action="store_true", help="EfficientNet-Lite0 with random weights")
    p.add_argument("--quick", action="store_true", help="batch 1, 64 px, one call: a smoke test (implies --no-write)")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--results-dir", type=Path, default=harness.RESULTS_DIR)
    args = p.parse_args(argv)
    try:
        args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    except ValueError:
        p.error(f"--batches must be comma-separated ints, got {args.batches!r}")
    if not args.batches or min(args.batches) < 1:
        p.error("--batches must list positive batch sizes")
    if args.size < 32:
        p.error("--size must be at least 32")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    if args.repeat < 1 or args.warmup < 0:
        p.error("--repeat must be >= 1 and --warmup >= 0")
    if args.quick:
        args.batches, args.size, args.repeat, args.warmup, args.no_write = [1], 64, 1, 0, True
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    crf = not args.no_crf
    if crf:
        try:
            import pydensecrf  # noqa: F401
        except ImportError:
            harness.warn("pydensecrf is not installed (pip install pydensecrf2): timing without the CRF")
            crf = False
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    info = harness.stamp(torch.device("cpu"))
    model, model_name = load_model(args.random_weights)
    load = harness.OtherLoad()
    rows = []
    for batch in args.batches:
        print(f"timing camfast.rcam, batch {batch} ...", flush=True)
        rows.append(measure(model, model_name, batch, args.size, crf, args.repeat, args.warmup))
    info["machine"]["other_busy_cores"] = load.cores()
    if harness.busy(info["machine"]):
        harness.warn(f"other processes kept {info['machine']['other_busy_cores']:.2f} cores busy during the run: "
                     "the timings are noisy")
    config = {"model": model_name, "batches": args.batches, "size": args.size, "crf": crf, "repeat": args.repeat,
              "warmup": args.warmup, "dtype": "float32", "device": "cpu"}
    print()
    print(header_text(config, info))
    print(table(rows))
    if not args.no_write:
        for path in write_results(rows, config, info, args.results_dir):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
