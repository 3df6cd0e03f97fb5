"""Score-CAM and EigenCAM against their limits and against pytorch-grad-cam (issue 16).

Usage:
    python benchmarks/score_cam.py [--batch 4] [--size 224] [--sweep 16,32,64,128] [--repeat 3]
        [--device cpu|cuda] [--quick] [--no-write]

torchvision resnet18 (random weights, eval, float32), one fixed batch, the layer ``layer4.1``
(``model.layer4[-1]``, ``C = 512``) for every provider:

* ``forwards bs=N``: the ``B * C`` masked forwards alone, ``N`` images per forward (a fixed
  tensor; no masks, no scores), for each ``N`` of ``--sweep``; **the limit** is the fastest;
* ``camfast score_cam``: :func:`camfast.score_cam` with its default ``batch_size`` (sized to
  the memory), and ``camfast score_cam bs=best`` with the sweep's fastest ``N``;
* ``compat ScoreCAM``: ``camfast.compat.ScoreCAM`` (pytorch-grad-cam's pipeline, same result
  as its class); ``pgc ScoreCAM``: pytorch-grad-cam 1.5.7's (16 masked images per forward, a
  host copy per score);
* ``camfast score_cam max_channels=K``: the top ``K`` channels by energy, with the max |diff|
  of its map against the exact one (and on the bundled EfficientNet-Lite0 with the sample
  photos, when its weights are installed: a real model's error);
* ``camfast eigen_cam`` / ``compat EigenCAM`` / ``pgc EigenCAM`` on that layer and on every
  ``find_layers`` layer (``... all layers``).

Channels whose upsampled activation is constant (a 1x1 map at small inputs, a dead ReLU
channel) need no forward in camfast (one zero image scores them all), so on inputs with many
such channels camfast can beat the limit; ``config.varying_pairs`` counts the others.

Correctness first: compat ScoreCAM and EigenCAM against pytorch-grad-cam's (max |diff| must
be <= 1e-4 / 1e-5) and camfast ``score_cam``'s layer map against compat's, from the untimed
first round. Providers are then timed alternately (one call each per round), medians over
``--repeat`` rounds. Targets (issue 16): camfast score_cam <= 1.15x the limit; pgc ScoreCAM
>= 1.5x camfast's; pgc EigenCAM >= 3x camfast eigen_cam. Writes
``benchmarks/results/score_cam-<device>.{json,md}`` (not with ``--quick``/``--no-write``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the torchvision workaround

import numpy as np  # noqa: E402
import torch  # noqa: E402

import harness  # noqa: E402
from camfast.utils.io import atomic_write  # noqa: E402
from torchvision_shim import import_torchvision  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
LAYER = "layer4.1"
MAX_CHANNELS = (32, 64, 128, 256)
TARGETS = [("camfast score_cam", "limit", 1.15, "<="), ("pgc ScoreCAM", "camfast score_cam", 1.5, ">="),
           ("pgc EigenCAM", "camfast eigen_cam", 3.0, ">="),
           ("pgc EigenCAM all layers", "camfast eigen_cam all layers", 3.0, ">=")]


def forwards(model, x: torch.Tensor, channels: int, n: int):
    """The ``B * C`` forwards of a Score-CAM layer, ``n`` images each, on a fixed batch."""
    total = x.shape[0] * channels
    chunk = x[:1].expand(min(n, total), *x.shape[1:]).contiguous()

    def run():
        with torch.no_grad():
            for i in range(0, total, n):
                model(chunk[: min(n, total - i)])

    return run


def providers(model, x, sweep, best=None):
    import pytorch_grad_cam

    import camfast
    from camfast import compat

    module = dict(model.named_modules())[LAYER]
    channels = module.conv2.out_channels
    layers = camfast.find_layers(model)
    modules = [dict(model.named_modules())[n] for n in layers]
    calls = {f"forwards bs={n}": forwards(model, x, channels, n) for n in sweep}
    calls["camfast score_cam"] = lambda: camfast.score_cam(model, x, layer=LAYER, return_layers=True)
    if best is not None:
        calls["camfast score_cam bs=best"] = lambda: camfast.score_cam(model, x, layer=LAYER, batch_size=best)
    calls["compat ScoreCAM"] = lambda: compat.ScoreCAM(model, [module])(x)
    calls["pgc ScoreCAM"] = lambda: pytorch_grad_cam.ScoreCAM(model, [module])(x, None)
    for k in MAX_CHANNELS:
        if k < channels:
            calls[f"camfast score_cam max_channels={k}"] = \
                lambda k=k: camfast.score_cam(model, x, layer=LAYER, max_channels=k)
    calls["camfast eigen_cam"] = lambda: camfast.eigen_cam(model, x, layer=LAYER)
    calls["compat EigenCAM"] = lambda: compat.EigenCAM(model, [module])(x)
    calls["pgc EigenCAM"] = lambda: pytorch_grad_cam.EigenCAM(model, [module])(x, None)
    calls["camfast eigen_cam all layers"] = lambda: camfast.eigen_cam(model, x, layer=layers)
    calls["pgc EigenCAM all layers"] = lambda: pytorch_grad_cam.EigenCAM(model, modules)(x, None)
    return calls


def check(outputs: dict, x: torch.Tensor) -> dict:
    """Correctness first, on the untimed round's outputs; the max |diff| of each comparison."""
    diffs = {
        "compat ScoreCAM vs pgc ScoreCAM": float(np.abs(outputs["compat ScoreCAM"] - outputs["pgc ScoreCAM"]).max()),
        "compat EigenCAM vs pgc EigenCAM": float(np.abs(outputs["compat EigenCAM"] - outputs["pgc EigenCAM"]).max()),
    }
    limits = {"compat ScoreCAM vs pgc ScoreCAM": 1e-4, "compat EigenCAM vs pgc EigenCAM": 1e-5}
    for what, diff in diffs.items():
        if diff > limits[what]:
            raise SystemExit(f"{what}: max |diff| {diff:.3g} > {limits[what]:g}; not timing a wrong result")
    exact = outputs["camfast score_cam"].cam
    for name, out in outputs.items():
        if name.startswith("camfast score_cam max_channels="):
            diffs[f"{name} vs exact (resnet18, random weights)"] = float((out - exact).abs().max())
    return diffs


def real_model_errors(size: int) -> dict:
    """``max_channels``' max |diff| against the exact map on EfficientNet-Lite0's head activation
    (1280 channels, the features entering the pooling) with the bundled photos: how much a
    real model's map moves."""
    import camfast
    from camfast.models import load_model, sample_images

    try:
        spec = load_model("efficientnet-lite0")
    except ModuleNotFoundError:
        return {}
    from PIL import Image

    rgb = [np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.Resampling.BICUBIC))
           for p in sample_images()]
    x = spec.preprocess(torch.from_numpy(np.stack(rgb)).permute(0, 3, 1, 2).float() / 255)
    exact = camfast.score_cam(spec.model, x, layer="_head_act")
    out = {}
    for k in (64, 128, 256, 512):
        approx = camfast.score_cam(spec.model, x, layer="_head_act", max_channels=k)
        out[f"camfast score_cam max_channels={k} vs exact (EfficientNet-Lite0 _head_act, sample photos, "
            f"{size} px)"] = float((approx - exact).abs().max())
    return out



def _timed_rounds(calls: dict, repeat: int, device: torch.device, progress: bool = False) -> dict[str, list[float]]:
    """Seconds per call: every call once per round (alternating, so drifting load hits all
    alike), ``repeat`` rounds, each call timed to its completion on ``device``."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(repeat):
        for name, fn in calls.items():
            harness.synchronize(device)
            t0 = time.perf_counter()
            fn()
            harness.synchronize(device)
            times[name].append(time.perf_counter() - t0)
        if progress:
            print(f"round {r + 1}/{repeat} done", file=sys.stderr, flush=True)
    return times

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--sweep", default="16,32,64,128", help="masked images per forward for the limit")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--quick", action="store_true", help="batch 1, 64 px, sweep 8,32, 1 round (a smoke run)")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.size, args.sweep, args.repeat = 1, 64, "8,32", 1
    sweep = [int(s) for s in args.sweep.split(",") if s.strip()]
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = import_torchvision().models.resnet18(weights=None).eval().to(device)
    x = harness.randn((args.batch, 3, args.size, args.size), torch.float32, device, seed=1)

    calls = providers(model, x, sweep)
    outputs = {name: fn() for name, fn in calls.items()}  # the untimed round
    harness.synchronize(device)
    diffs = check(outputs, x)
    del outputs
    times = _timed_rounds(calls, args.repeat, device, progress=True)
    limit_name = min((n for n in times if n.startswith("forwards bs=")), key=lambda n: statistics.median(times[n]))
    best = int(limit_name.split("=")[1])
    times["limit"] = times[limit_name]
    # camfast at the sweep's best batch size, timed in rounds of its own next to the limit
    extra = {"camfast score_cam bs=best": providers(model, x, [best], best)["camfast score_cam bs=best"],
             limit_name: calls[limit_name]}
    paired = _timed_rounds(extra, args.repeat, device)
    times["camfast score_cam bs=best"] = paired["camfast score_cam bs=best"]

    def median_ms(name: str) -> float:
        return 1e3 * statistics.median(times[name])

    def ratio(a: str, b: str) -> float:
        if {a, b} == {"camfast score_cam bs=best", "limit"}:
            return statistics.median(u / v for u, v in zip(paired["camfast score_cam bs=best"], paired[limit_name]))
        return statistics.median(u / v for u, v in zip(times[a], times[b]))

    rows = [{"provider": n, "median_ms": median_ms(n), "min_ms": 1e3 * min(t)} for n, t in times.items()]
    targets = []
    for a, b, limit, sense in TARGETS:
        value = ratio(a, b)
        ok = value <= limit if sense == "<=" else value >= limit
        targets.append({"what": f"{a} {sense} {limit:g}x {b}", "ratio": value, "pass": ok})
    also = {"camfast score_cam bs=best vs the limit": ratio("camfast score_cam bs=best", "limit"),
            "pgc ScoreCAM vs compat ScoreCAM": ratio("pgc ScoreCAM", "compat ScoreCAM")}
    if not args.quick:
        diffs.update(real_model_errors(args.size))
    got = []
    hook = dict(model.named_modules())[LAYER].register_forward_hook(lambda m, i, o: got.append(o.detach()))
    with torch.no_grad():
        model(x)
    hook.remove()
    flat = got[0].flatten(2)
    varying = int((flat.amax(-1) > flat.amin(-1)).sum())
    config = {"model": "resnet18 (random weights)", "varying_pairs": varying, "layer": LAYER, "batch": args.batch, "size": args.size,
              "sweep": sweep, "best_batch": best, "repeat": args.repeat, "device": args.device,
              "masked_forwards": args.batch * dict(model.named_modules())[LAYER].conv2.out_channels}
    stamp = harness.stamp(device)
    lines = [f"# Score-CAM and EigenCAM ({args.device})", "",
             f"Generated by `benchmarks/score_cam.py`; {stamp['date']}, {harness.commit_text(stamp['git'])}, "
             f"{harness.machine_text(stamp['machine'])}.", "", f"config: {config}", "",
             "| provider | median ms | min ms |", "| --- | --- | --- |"]
    lines += [f"| {r['provider']} | {r['median_ms']:.1f} | {r['min_ms']:.1f} |" for r in rows]
    lines += ["", "| target | ratio | result |", "| --- | --- | --- |"]
    lines += [f"| {t['what']} | {t['ratio']:.3f}x | {'PASS' if t['pass'] else 'MISS'} |" for t in targets]
    lines += ["", "| also | ratio |", "| --- | --- |"] + [f"| {k} | {v:.3f}x |" for k, v in also.items()]
    lines += ["", "| check / error | max abs diff |", "| --- | --- |"] + [f"| {k} | {v:.3g} |" for k, v in diffs.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write and not args.quick:
        data = {"stamp": stamp, "config": config, "rows": rows, "targets": targets, "also": also, "diffs": diffs}
        atomic_write(RESULTS / f"score_cam-{args.device}.json", json.dumps(data, indent=1, default=str) + "\n",
                     fsync=True)
        atomic_write(RESULTS / f"score_cam-{args.device}.md", text, fsync=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
