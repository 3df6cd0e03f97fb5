"""The real-model map-quality table, and the faithfulness metrics' speed.

Usage:
    python benchmarks/faithfulness.py [camfast eval faithfulness options]   # the table
    python benchmarks/faithfulness.py --speed [--size 224] [--batch 4] [--repeat 3] [--steps 20]
        [--device cpu] [--threads N] [--quick] [--no-write]

Without ``--speed`` it is ``camfast eval faithfulness --out benchmarks/results`` (every
registered method, every metric, EfficientNet-Lite0 and Lite1/Lite2 where installed, on the
photos shipped inside installed packages; ``benchmarks/results/faithfulness-<device>.{md,json,png}``;
the logic is :mod:`camfast.evaluation.map_quality`).

``--speed`` measures the targets of issue 16 on the real EfficientNet-Lite0 (ImageNet weights)
and real photos, with Grad-CAM's maps, in one run (ratios, medians over ``--repeat``):

* ROAD (MoRF and LeRF at 10..90 %): camfast's :func:`camfast.evaluation.faithfulness.road`
  against pytorch-grad-cam's ``ROADMostRelevantFirstAverage`` + ``ROADLeastRelevantFirstAverage``
  on the same inputs, maps and classes (target: camfast >= 5x faster); the two results are
  compared too (both add their own noise: the difference is reported, not asserted);
* Average Drop / Increase in Confidence against the two forwards they need (``x`` and
  ``x * map``, same batch size): target <= 1.10x;
* deletion / insertion against the forwards of the same number of perturbed inputs (same batch
  size, inputs made beforehand): target <= 1.10x.

Writes ``benchmarks/results/faithfulness-speed-<device>.{json,md}`` (stamped as the other
benchmarks: ``harness.stamp``; atomic writes) unless ``--no-write``. pytorch-grad-cam is
imported here only (through ``tests/torchvision_shim.py``); without it the ROAD ratio is left
out with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import torch  # noqa: E402

import harness  # noqa: E402
from camfast.evaluation import faithfulness as FM  # noqa: E402
from camfast.utils.io import atomic_write  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
OP = "faithfulness-speed"
TARGETS = {"road_speedup_vs_pgc": (">=", 5.0), "drop_increase_vs_forwards": ("<=", 1.10),
           "deletion_insertion_vs_forwards": ("<=", 1.10)}


def _time(fn, repeat: int, device: torch.device) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeat):
        harness.synchronize(device)
        t = time.perf_counter()
        fn()
        harness.synchronize(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def _inputs(size: int, batch: int, device: torch.device):
    from camfast.evaluation import map_quality
    from camfast.models import load_model

    spec = load_model("efficientnet-lite0", device=device)
    photos = map_quality.offline_photos(log=lambda line: None)[0]
    photos = [photos[i % len(photos)] for i in range(batch)]
    images = map_quality.photo_batch(photos, size).to(device)
    x = spec.preprocess(images)
    import camfast

    with torch.no_grad():
        logits = spec.model(x)
    idx = logits.argmax(1)
    maps = camfast.grad_cam(spec.model, x, idx)
    return spec.model, x, maps, idx, logits


def _pgc_road(model, x, maps, idx, percentiles):
    from torchvision_shim import import_torchvision

    import_torchvision()
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    targets = [ClassifierOutputTarget(int(c)) for c in idx]
    cams = maps.detach().cpu().numpy()
    pct = [int(round(100 - p)) for p in percentiles]  # pytorch-grad-cam keeps M < its percentile
    morf, lerf = ROADMostRelevantFirstAverage(pct), ROADLeastRelevantFirstAverage(pct)

    def run():
        return morf(x, cams, targets, model), lerf(x, cams, targets, model)

    return run


def speed(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    size, batch = (64, 1) if args.quick else (args.size, args.batch)
    steps = 5 if args.quick else args.steps
    percentiles = (30, 70) if args.quick else FM.PERCENTILES
    repeat = 1 if args.quick else args.repeat
    load = harness.OtherLoad()
    model, x, maps, idx, logits = _inputs(size, batch, device)
    bs = args.batch_size
    rows: dict[str, Any] = {}
    notes: list[str] = []

    # Average Drop / Increase: the metric vs its two forwards
    masked = x * maps[:, None]

    def forwards_ad():
        with torch.no_grad():
            for inp in (x, masked):
                for s in range(0, inp.shape[0], bs):
                    model(inp[s:s + bs])

    FM.average_drop_increase(model, x, maps, idx, batch_size=bs)  # warm-up
    t_ad, _ = _time(lambda: FM.average_drop_increase(model, x, maps, idx, batch_size=bs), repeat, device)
    t_fw, _ = _time(forwards_ad, repeat, device)
    rows["drop_increase"] = {"seconds": t_ad, "forwards_seconds": t_fw, "ratio": t_ad / t_fw,
                             "forwards": 2 * x.shape[0]}

    # deletion / insertion: the metric vs the forwards of as many perturbed inputs
    curves = FM.deletion_insertion(model, x, maps, idx, steps=steps, batch_size=bs)
    S = curves.fractions.numel()
    n_inputs = x.shape[0] * (2 * (S - 2) + 2) + x.shape[0]  # + the forward of x itself
    junk = torch.randn(min(bs, n_inputs), *x.shape[1:], device=device)

    def forwards_di():
        with torch.no_grad():
            for s in range(0, n_inputs, bs):
                model(junk[: min(bs, n_inputs - s)])

    t_di, _ = _time(lambda: FM.deletion_insertion(model, x, maps, idx, steps=steps, batch_size=bs), repeat, device)
    t_fd, _ = _time(forwards_di, repeat, device)
    rows["deletion_insertion"] = {"seconds": t_di, "forwards_seconds": t_fd, "ratio": t_di / t_fd,
                                  "forwards": n_inputs, "steps": steps}

    # ROAD: camfast vs pytorch-grad-cam
    gen = torch.Generator(device=device).manual_seed(0)
    ours = FM.road(model, x, maps, idx, percentiles=percentiles, score="logit", batch_size=bs, generator=gen)
    t_road, _ = _time(lambda: FM.road(model, x, maps, idx, percentiles=percentiles, score="logit", batch_size=bs,
                                      generator=gen), repeat, device)
    # the imputation alone, and its iterations, for the record
    masks = FM.removal_masks(maps, percentiles, True)
    _, info = FM.noisy_linear_imputation(x[:1].expand(masks.shape[1], -1, -1, -1), masks[0], return_info=True)
    road_row: dict[str, Any] = {"seconds": t_road, "forwards": x.shape[0] * 2 * len(percentiles),
                                "cg_iterations_image0_morf": info["iterations"],
                                "cg_max_relative_residual": float(info["residual"].max())}
    try:
        pgc = _pgc_road(model, x.cpu() if device.type != "cpu" else x, maps, idx, percentiles)
    except ImportError as e:
        notes.append(f"pytorch-grad-cam is not importable here ({e}): no ROAD ratio")
        pgc = None
    if pgc is not None:
        t0 = time.perf_counter()
        pm, pl = pgc()
        t_pgc = time.perf_counter() - t0
        road_row.update(pgc_seconds=t_pgc, speedup=t_pgc / t_road,
                        morf_camfast=ours.morf_mean.tolist(), morf_pgc=[float(v) for v in pm],
                        lerf_camfast=ours.lerf_mean.tolist(), lerf_pgc=[float(v) for v in pl],
                        max_abs_difference=float(max(abs(ours.morf_mean.cpu() - torch.as_tensor(pm)).max(),
                                                     abs(ours.lerf_mean.cpu() - torch.as_tensor(pl)).max())))
    rows["road"] = road_row
    verdicts = []
    for key, value in (("road_speedup_vs_pgc", road_row.get("speedup")),
                       ("drop_increase_vs_forwards", rows["drop_increase"]["ratio"]),
                       ("deletion_insertion_vs_forwards", rows["deletion_insertion"]["ratio"])):
        op, limit = TARGETS[key]
        ok = None if value is None else (value >= limit if op == ">=" else value <= limit)
        verdicts.append({"target": key, "value": value, "op": op, "limit": limit, "met": ok})
    return {"op": OP, "stamp": harness.stamp(device), "other_busy_cores": load.cores(),
            "config": {"model": "efficientnet-lite0 (ImageNet weights)", "maps": "grad-cam", "size": size,
                       "batch": batch, "batch_size": bs, "steps": steps, "percentiles": list(percentiles),
                       "repeat": repeat, "device": str(device), "quick": args.quick},
            "rows": rows, "verdicts": verdicts, "notes": notes}


def render(data: dict[str, Any]) -> str:
    st, cfg, r = data["stamp"], data["config"], data["rows"]
    m, git = st["machine"], st.get("git", {})
    load = data.get("other_busy_cores")
    lines = ["# Faithfulness metrics: speed", "", "Generated by `python benchmarks/faithfulness.py --speed`; do not "
             "edit.", "", "```text", f"{st['date']}, commit {git.get('commit')}{' (dirty)' if git.get('dirty') else ''}, "
             f"torch {st['versions']['torch']}", f"{m.get('cpu')}, {m.get('cores')} cores, {m.get('torch_threads')} "
             "torch threads" + ("" if load is None else f"; other processes kept {load:.2f} cores busy on average"),
             "```", "", f"{cfg['model']}, {cfg['batch']} photos at {cfg['size']}x{cfg['size']}, Grad-CAM maps, "
             f"forward batch {cfg['batch_size']}, median of {cfg['repeat']}.", "",
             "| metric | camfast s | reference | reference s | ratio | target | met |", "|---|---|---|---|---|---|---|"]
    met = {v["target"]: v for v in data["verdicts"]}

    def verdict(key):
        v = met[key]
        return f"{v['op']} {v['limit']}", "-" if v["met"] is None else ("yes" if v["met"] else "**no**")

    t, ok = verdict("drop_increase_vs_forwards")
    lines.append(f"| Average Drop / IC | {r['drop_increase']['seconds']:.3f} | its {r['drop_increase']['forwards']} "
                 f"forwards | {r['drop_increase']['forwards_seconds']:.3f} | {r['drop_increase']['ratio']:.2f}x | {t} | {ok} |")
    t, ok = verdict("deletion_insertion_vs_forwards")
    d = r["deletion_insertion"]
    lines.append(f"| deletion / insertion ({d['steps']} steps) | {d['seconds']:.3f} | its {d['forwards']} forwards | "
                 f"{d['forwards_seconds']:.3f} | {d['ratio']:.2f}x | {t} | {ok} |")
    t, ok = verdict("road_speedup_vs_pgc")
    ro = r["road"]
    lines.append(f"| ROAD MoRF + LeRF ({len(cfg['percentiles'])} percentages) | {ro['seconds']:.2f} | pytorch-grad-cam | "
                 + (f"{ro['pgc_seconds']:.2f} | {ro['speedup']:.1f}x faster" if "speedup" in ro else "- | -")
                 + f" | {t} | {ok} |")
    lines += ["", f"ROAD's conjugate gradients: {ro['cg_iterations_image0_morf']} iterations for image 0's MoRF "
              f"systems (max relative residual {ro['cg_max_relative_residual']:.1e})."]
    if "max_abs_difference" in ro:
        lines.append(f"ROAD camfast vs pytorch-grad-cam (each with its own noise): largest difference of a per-image "
                     f"mean {ro['max_abs_difference']:.4f} (logits).")
    lines += [""] + [f"- {n}" for n in data["notes"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--speed" not in argv:
        from camfast.cli import main as cli_main

        if not any(a == "--out" or a.startswith("--out=") for a in argv):
            argv += ["--out", os.fspath(REPO / "benchmarks" / "results")]
        return cli_main(["eval", "faithfulness", *argv])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--speed", action="store_true")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=4, help="photos")
    p.add_argument("--batch-size", type=int, default=32, help="inputs per model forward")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="a smoke run: 1 photo at 64 px, 5 steps, ROAD at 30 and 70 %%, "
                   "one repeat")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    data = speed(args)
    text = render(data)
    print(text)
    if not args.no_write:
        dev = torch.device(args.device).type
        out = REPO / "benchmarks" / "results"
        atomic_write(out / f"{OP}-{dev}.json", json.dumps(data, indent=1, default=float) + "\n")
        atomic_write(out / f"{OP}-{dev}.md", text)
        print(f"wrote {out / f'{OP}-{dev}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
