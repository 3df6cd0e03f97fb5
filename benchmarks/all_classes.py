"""All classes in one call and multi-scale recipes against the model's own limits (issue 12).

Usage:
    python benchmarks/all_classes.py [--batch 8] [--size 224] [--classes 3] [--repeat 5] [--quick] [--no-write]

With the bundled EfficientNet-Lite0 (ImageNet weights) in float32 on the CPU, one fixed batch:

* ``limit xK``: one forward, then K ``torch.autograd.grad`` calls (one per class, the graph
  kept) of the summed class logits towards the input: what any gradient method must pay for
  K classes per image; ``limit x1`` the same for one class; ``forward``: one forward alone;
* ``zoom_cam xK`` / ``grad_cam xK`` / ``cam xK``: one call with a ``(B, K)`` class tensor;
  ``... K calls``: K single-class calls (what users of other libraries do);
* ``multiscale limit``: at each of IRN's scales (1.0, 0.5, 1.5, 2.0) one forward of the images
  and their flips and one gradient; ``multiscale zoom_cam``: ``camfast.multiscale("zoom-cam",
  ...)`` with one class per image.

Providers are timed alternately (one call of each per round, ``--repeat`` rounds after one
untimed), so drifting load hits all alike; ratios are medians over rounds of the per-round
ratio. Targets (issue 12): ``zoom_cam xK`` and ``grad_cam xK`` <= 1.10x ``limit xK``;
``cam xK`` <= 1.10x ``forward``; ``multiscale zoom_cam`` <= 1.10x ``multiscale limit``.
Writes ``benchmarks/results/all_classes-cpu.{json,md}`` stamped like the other benchmarks.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import harness  # noqa: E402
from camfast.utils.io import atomic_write  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SCALES = (1.0, 0.5, 1.5, 2.0)
TARGETS = [("zoom_cam xK", "limit xK"), ("grad_cam xK", "limit xK"), ("cam xK", "forward"),
           ("multiscale zoom_cam", "multiscale limit")]
LIMIT = 1.10


def providers(model, x: torch.Tensor, k: int) -> dict:
    import torch.nn.functional as F

    import camfast

    B = x.shape[0]
    with torch.no_grad():
        top = model(x).topk(k, dim=1).indices  # (B, K): the K top classes of each image
    layers = camfast.find_layers(model)

    def limit(n: int):
        def run():
            with torch.enable_grad():
                xi = x.detach().requires_grad_(True)
                logits = model(xi)
                for j in range(n):
                    torch.autograd.grad(logits.gather(1, top[:, j:j + 1]).sum(), xi, retain_graph=j < n - 1)
        return run

    def ms_limit():
        for s in SCALES:
            size = (round(x.shape[-2] * s), round(x.shape[-1] * s))
            xs = x if s == 1.0 else F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            with torch.enable_grad():
                xi = torch.cat([xs, xs.flip(-1)]).requires_grad_(True)
                logits = model(xi)
                torch.autograd.grad(logits.gather(1, torch.cat([top[:, :1], top[:, :1]])).sum(), xi)

    def forward():
        with torch.no_grad():
            model(x)

    return {
        "limit x1": limit(1),
        "limit xK": limit(k),
        "forward": forward,
        "zoom_cam xK": lambda: camfast.zoom_cam(model, x, top, layers=layers),
        "zoom_cam K calls": lambda: [camfast.zoom_cam(model, x, top[:, j], layers=layers) for j in range(k)],
        "grad_cam xK": lambda: camfast.grad_cam(model, x, top),
        "grad_cam K calls": lambda: [camfast.grad_cam(model, x, top[:, j]) for j in range(k)],
        "cam xK": lambda: camfast.cam(model, x, top),
        "cam K calls": lambda: [camfast.cam(model, x, top[:, j]) for j in range(k)],
        "multiscale limit": ms_limit,
        "multiscale zoom_cam": lambda: camfast.multiscale("zoom-cam", model, x, top[:, 0], scales=SCALES),
    }, B


def check(model, x, k) -> None:
    """Correctness first: K classes in one call equal K single calls."""
    import camfast

    with torch.no_grad():
        top = model(x).topk(k, dim=1).indices
    for fn in (camfast.zoom_cam, camfast.grad_cam, camfast.cam):
        allk = fn(model, x, top)
        single = torch.stack([fn(model, x, top[:, j]) for j in range(k)], 1)
        diff = float((allk - single).abs().max())
        if diff > 1e-5:
            raise SystemExit(f"{fn.__name__}: K classes in one call differ from K calls by {diff:.3g}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--classes", type=int, default=3)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="batch 2, 96 px, 2 rounds (a smoke run)")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.size, args.repeat = 2, 96, 2
    from camfast.models import efficientnet_lite0

    torch.manual_seed(0)
    model = efficientnet_lite0(pretrained=True).eval()
    x = harness.randn((args.batch, 3, args.size, args.size), torch.float32, torch.device("cpu"), seed=1)
    check(model, x, args.classes)
    calls, _ = providers(model, x, args.classes)
    for fn in calls.values():  # one untimed round
        fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(args.repeat):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        print(f"round {r + 1}/{args.repeat} done", file=sys.stderr, flush=True)
    rows = [{"provider": n, "median_ms": 1e3 * statistics.median(t), "min_ms": 1e3 * min(t)} for n, t in times.items()]

    def ratio(a: str, b: str) -> float:
        return statistics.median(ta / tb for ta, tb in zip(times[a], times[b]))

    targets = [{"what": f"{a} <= {LIMIT:.2f}x {b}", "ratio": ratio(a, b), "pass": ratio(a, b) <= LIMIT}
               for a, b in TARGETS]
    extra = {f"{m} xK vs K calls": ratio(f"{m} xK", f"{m} K calls") for m in ("zoom_cam", "grad_cam", "cam")}
    config = {"batch": args.batch, "size": args.size, "classes": args.classes, "repeat": args.repeat,
              "model": "efficientnet-lite0 (ImageNet weights)", "scales": SCALES}
    data = {"stamp": harness.stamp(torch.device("cpu")), "config": config, "rows": rows, "targets": targets, "versus_calls": extra}
    lines = ["# All classes in one call (cpu)", "", f"Generated by `benchmarks/all_classes.py`; config {config}.",
             "", "| provider | median ms | min ms |", "| --- | --- | --- |"]
    lines += [f"| {r['provider']} | {r['median_ms']:.0f} | {r['min_ms']:.0f} |" for r in rows]
    lines += ["", "| target | ratio | result |", "| --- | --- | --- |"]
    lines += [f"| {t['what']} | {t['ratio']:.3f}x | {'PASS' if t['pass'] else 'MISS'} |" for t in targets]
    lines += ["", "| one call with K classes vs K single-class calls | ratio |", "| --- | --- |"]
    lines += [f"| {k} | {v:.3f}x |" for k, v in extra.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write and not args.quick:
        atomic_write(RESULTS / "all_classes-cpu.json", json.dumps(data, indent=1, default=str) + "\n", fsync=True)
        atomic_write(RESULTS / "all_classes-cpu.md", text, fsync=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
