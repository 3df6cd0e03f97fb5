"""Benchmark the one-call CAM methods against "the limit" and against other libraries.

Usage:
    python benchmarks/methods.py [--models resnet50,vgg16] [--batch 8] [--size 224]
        [--providers limit,zoom_cam,...] [--repeat N] [--warmup N] [--device cpu|cuda] [--quick] [--no-write]

For each model (torchvision, or timm with ``timm:<name>``; random weights, eval mode,
float32 on the CPU, or on the GPU with ``--device cuda``) every provider runs in a fresh
Python process: build the model and the input, then (peak-memory window
opened here) one checked call, the warm-up calls and ``--repeat`` timed calls. It reports
the median and p20/p80 milliseconds per call and the peak resident memory the calls added
above the post-setup RSS, each also as a ratio to the limit:

* ``limit``: the same model's forward with no-op forward hooks on the layers
  ``camfast.find_layers(model)`` returns, then ONE ``torch.autograd.grad`` of the summed
  top-class logits towards the input (which requires grad; no parameter gradient): the
  gradient work camfast's engine does, without its tensor hooks, per-layer maps,
  upsampling and fusion. It runs first and again last (``limit-after``); the ratios use
  the lower of the two medians and of the two peaks (the stricter limit).
* every gradient and forward-only method of camfast's registry: ``zoom_cam`` (all
  discovered layers, max fusion), ``layer_cam`` (all layers), ``grad_cam``,
  ``grad_cam_plus_plus``, ``x_grad_cam``, ``eigen_grad_cam``, ``eigen_cam`` (one layer: the
  deepest discovered one), ...; ``score_cam`` (``C`` masked forwards per image) only when
  asked for with ``--providers``: ``benchmarks/score_cam.py`` measures it against its limit.
* pytorch-grad-cam's ``GradCAM``, ``GradCAMPlusPlus``, ``XGradCAM``, ``EigenGradCAM`` and
  ``EigenCAM`` on that layer, and its ``HiResCAM`` (the Zoom-CAM per-layer map) and
  ``LayerCAM`` on all the discovered layers (pytorch-grad-cam fuses layers by mean: its
  behaviour, not Zoom-CAM's max); ``ScoreCAM`` only with ``--providers``.
* torchcam's ``GradCAM`` on that layer (maps at feature resolution: torchcam does not
  upsample).

Peak memory: the calls' high-water mark of resident memory (``VmHWM`` in
``/proc/self/status``, reset after setup by writing 5 to ``/proc/self/clear_refs``) minus
the RSS after setup, in a process that ran nothing else. Where the reset is not allowed,
``ru_maxrss`` is used and the figure is a lower bound (flagged). On CUDA the times come from
CUDA events and the peak is ``torch.cuda.max_memory_allocated`` above what was allocated
after setup. ``--quick`` runs every provider of a model in one process (memory then only
indicative).

Prints a table per model and PASS/MISS for the targets (``TARGETS``: zoom_cam time and
peak memory as ratios to the limit), never failing on a MISS. Unless ``--no-write``
(implied by ``--quick``), merges the rows into ``benchmarks/results/methods-<device>.json``
and rewrites ``methods-<device>.md`` (``cpu`` or ``cuda``), stamped like the op benchmarks
(``harness.stamp``).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the torchvision import workaround shared with the tests (tests/torchvision_shim.py)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import torch  # noqa: E402

import harness  # noqa: E402
from camfast.utils.io import atomic_write  # noqa: E402
from torchvision_shim import import_torchvision  # noqa: E402

OP = "methods"
DEFAULT_MODELS = ("resnet50", "vgg16")
QUICK_MODELS = ("resnet18", "vgg11")
RESULT_PREFIX = "METHODS-RESULT "

#: The goals of the issue, for the zoom_cam row, as ratios to the limit (CPU).
TARGETS = {"time": ("zoom_cam", "median_ratio", 1.15), "peak memory": ("zoom_cam", "peak_ratio", 1.2)}
#: Goals between two providers' median times (issue 16): ``provider <= limit x other``.
RELATIVE_TARGETS = [("grad_cam_plus_plus", "grad_cam", 1.05), ("x_grad_cam", "grad_cam", 1.05),
                    ("eigen_cam", "pgc-EigenCAM", 1 / 3)]


@dataclasses.dataclass(frozen=True)
class Provider:
    name: str
    library: str
    method: str
    layers: str  # "all" or "one"
    note: str
    default: bool = True  # run without --providers


#: Methods whose cost is a forward per channel and image: benchmarks/score_cam.py measures them
#: against that limit; here they run only when named in --providers.
FORWARD_PER_CHANNEL = ("score-cam",)
PGC_ONE_LAYER_NOTE = "loss.backward(): parameter grads too; numpy maps, cv2 resize to input size"


def _camfast_providers() -> list[Provider]:
    """One provider per gradient or forward-only method of camfast's registry (a new method is
    benchmarked with no edit here), named by its function (``zoom_cam``, ``grad_cam``, ...)."""
    from camfast.methods import registry

    return [Provider(s.function.__name__, "camfast", s.name, "all" if s.multi_layer else "one",
                     ("max fusion, " if s.multi_layer else "") + "output at input size"
                     + ("; no backward" if s.kind == "forward-only" else ""),
                     default=s.name not in FORWARD_PER_CHANNEL)
            for s in registry.specs() if s.kind in ("gradient", "forward-only") and s.base is None]


PROVIDERS: dict[str, Provider] = {p.name: p for p in [
    Provider("limit", "-", "forward + autograd.grad to the input", "all",
             "no-op forward hooks on every discovered layer; no CAM work"),
    *_camfast_providers(),
    Provider("pgc-GradCAM", "pytorch-grad-cam", "GradCAM", "one", PGC_ONE_LAYER_NOTE),
    Provider("pgc-HiResCAM", "pytorch-grad-cam", "HiResCAM", "all",
             "Zoom-CAM's per-layer map; layers fused by MEAN (pytorch-grad-cam's behaviour)"),
    Provider("pgc-LayerCAM", "pytorch-grad-cam", "LayerCAM", "all", "layers fused by MEAN (pytorch-grad-cam's behaviour)"),
    Provider("pgc-XGradCAM", "pytorch-grad-cam", "XGradCAM", "one", PGC_ONE_LAYER_NOTE),
    Provider("pgc-GradCAMPlusPlus", "pytorch-grad-cam", "GradCAMPlusPlus", "one", PGC_ONE_LAYER_NOTE),
    Provider("pgc-EigenGradCAM", "pytorch-grad-cam", "EigenGradCAM", "one",
             PGC_ONE_LAYER_NOTE + "; one numpy SVD per image"),
    Provider("pgc-EigenCAM", "pytorch-grad-cam", "EigenCAM", "one",
             "forward with autograd on (no backward); one numpy SVD per image; cv2 resize"),
    Provider("pgc-ScoreCAM", "pytorch-grad-cam", "ScoreCAM", "one",
             "16 masked images per forward, one host copy per score", default=False),
    Provider("torchcam-GradCAM", "torchcam", "GradCAM", "one",
             "backward stops at the layer; maps at feature resolution (no upsampling)"),
    Provider("limit-after", "-", "the limit again, after the others", "all", "drift check"),
]}
LIMITS = ("limit", "limit-after")


# =========================================================================== worker (one process)

def build_model(name: str, size: int | None = None) -> torch.nn.Module:
    """A torchvision model by name, or ``timm:<name>`` (timm, random weights; a vision
    transformer is built for ``size`` x ``size`` inputs), in eval mode."""
    torchvision = import_torchvision()
    torch.manual_seed(0)
    if name.startswith("timm:"):
        import timm

        kwargs = {"img_size": size} if size is not None and ("vit" in name or "deit" in name) else {}
        return timm.create_model(name[len("timm:"):], pretrained=False, **kwargs).eval()
    return getattr(torchvision.models, name)(weights=None).eval()


def make_call(provider: str, model: torch.nn.Module, x: torch.Tensor, layers: list[str]) -> Callable[[], Any]:
    """The provider as a no-argument callable returning its maps (setup, imports included,
    happens here, outside the timed and memory-measured calls)."""
    modules = dict(model.named_modules())
    last = layers[-1]

    if provider in LIMITS:
        hooked = [modules[n] for n in layers]

        def limit() -> None:
            handles = [m.register_forward_hook(lambda module, inputs, output: None) for m in hooked]
            try:
                with torch.enable_grad():
                    x_in = x.detach().requires_grad_(True)
                    logits = model(x_in)
                    score = logits.gather(1, logits.detach().argmax(dim=1)[:, None]).sum()
                    torch.autograd.grad(score, (x_in,))
            finally:
                for h in handles:
                    h.remove()

        return limit
    if PROVIDERS[provider].library == "camfast":
        from camfast.methods import registry

        spec = registry.get(PROVIDERS[provider].method)
        if spec.multi_layer:
            return lambda: spec(model, x, layers=layers)
        return lambda: spec(model, x, layer=last)
    if provider.startswith("pgc-"):
        import_torchvision()
        import pytorch_grad_cam

        cls = getattr(pytorch_grad_cam, PROVIDERS[provider].method)
        targets = [modules[last]] if PROVIDERS[provider].layers == "one" else [modules[n] for n in layers]

        def pgc() -> Any:
            with cls(model=model, target_layers=targets) as extractor:
                return extractor(input_tensor=x, targets=None)

        return pgc
    if provider == "torchcam-GradCAM":
        from torchcam.methods import GradCAM

        def torchcam() -> Any:
            with GradCAM(model, target_layer=last) as extractor:
                scores = model(x)
                return extractor(class_idx=scores.argmax(dim=1).tolist(), scores=scores)[0]

        return torchcam
    raise ValueError(f"unknown provider {provider!r}")


def check_output(out: Any, batch: int) -> tuple[str, list[int] | None, str]:
    """``(status, output shape, message)``: maps must be (B, h, w), finite, within [0, 1]."""
    if out is None:
        return "ok", None, ""
    if isinstance(out, tuple):  # CAMResult
        out = out[0]
    t = torch.as_tensor(out)
    shape = list(t.shape)
    if t.dim() != 3 or shape[0] != batch:
        return "FAILED", shape, f"expected (B={batch}, h, w) maps"
    if not bool(torch.isfinite(t).all()):
        return "FAILED", shape, "non-finite values"
    lo, hi = float(t.min()), float(t.max())
    if lo < -1e-5 or hi > 1 + 1e-5:
        return "FAILED", shape, f"values outside [0, 1]: [{lo:.3g}, {hi:.3g}]"
    return "ok", shape, ""


def _status_kib() -> dict[str, int]:
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out


class PeakMemory:
    """Resident-memory high-water mark above the RSS at construction, in MiB; on a CUDA
    device the allocator's peak above what was allocated at construction."""

    def __init__(self, device: torch.device = torch.device("cpu")) -> None:
        gc.collect()
        self.device = device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            self.method = "torch.cuda.max_memory_allocated above the allocation after setup"
            self.base_kib = torch.cuda.memory_allocated(device) / 1024
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.method = "VmHWM reset after setup"
        except OSError:
            self.method = "ru_maxrss (lower bound: the setup's own peak may hide the calls')"
        status = _status_kib()
        self.base_kib = status.get("VmRSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return max(0.0, torch.cuda.max_memory_allocated(self.device) / 1024 - self.base_kib) / 1024
        peak = _status_kib().get("VmHWM") if self.method.startswith("VmHWM") else None
        if peak is None:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        return max(0, peak - self.base_kib) / 1024


def run_worker(spec: Mapping[str, Any]) -> None:
    """Measure ``spec['providers']`` in order on one model in this process; one result line each."""
    import camfast

    device = torch.device(spec.get("device", "cpu"))
    model = build_model(spec["model"], spec["size"]).to(device)
    x = harness.randn((spec["batch"], 3, spec["size"], spec["size"]), torch.float32, device, seed=1)
    layers = camfast.find_layers(model)
    for provider in spec["providers"]:
        fn = make_call(provider, model, x, layers)
        row: dict[str, Any] = {"provider": provider, "layers": 1 if PROVIDERS[provider].layers == "one" else len(layers)}
        memory = PeakMemory(device)
        row["memory_method"] = memory.method
        row["base_rss_mb"] = memory.base_kib / 1024
        try:
            t0 = time.perf_counter()
            out = fn()
            harness.synchronize(device)
            first_s = time.perf_counter() - t0
            row["status"], row["output_shape"], row["message"] = check_output(out, spec["batch"])
            del out
        except Exception as exc:  # reported, not fatal to the run
            row["status"], row["message"] = "ERROR", f"{type(exc).__name__}: {exc}".splitlines()[0]
            first_s = None
        if row["status"] == "ok":
            if first_s > spec["max_call_s"]:
                row["status"], row["message"] = "SLOW", f"first call took {first_s:.0f} s; not timed"
            else:
                t = harness.measure(fn, (), device, spec["repeat"], max(0, spec["warmup"] - 1))
                row.update(n=t.n, median_ms=t.median_ms, p20_ms=t.p20_ms, p80_ms=t.p80_ms, min_ms=t.min_ms)
        row["peak_mb"] = memory.peak_mb()
        model.zero_grad(set_to_none=True)  # pytorch-grad-cam leaves parameter grads behind
        del fn
        print(RESULT_PREFIX + json.dumps(row), flush=True)


# =========================================================================== driver


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", help=f"comma-separated torchvision models, or timm:<name> (e.g. "
                   f"timm:vit_tiny_patch16_224) (default {','.join(DEFAULT_MODELS)}; "
                   f"{','.join(QUICK_MODELS)} with --quick)")
    p.add_argument("--batch", type=int, help="images per call (default 8; 2 with --quick)")
    p.add_argument("--size", type=int, help="image side in pixels (default 224; 64 with --quick)")
    p.add_argument("--providers", help=f"comma-separated, from {','.join(PROVIDERS)} (default: all but "
                   f"{','.join(n for n, p in PROVIDERS.items() if not p.default)}; the limit always runs)")
    p.add_argument("--repeat", type=int, help="timed calls per provider (default 10; 2 with --quick)")
    p.add_argument("--warmup", type=int, help="untimed calls first, the checked call included (default 2; 1 with --quick)")
    p.add_argument("--max-call-s", type=float, default=120.0, help="a provider whose first call takes longer is not timed")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the model runs (default cpu)")
    p.add_argument("--quick", action="store_true", help="small models and inputs, 2 repeats, one process per model: "
                   "a smoke test in seconds; implies --no-write")
    p.add_argument("--no-write", action="store_true", help="print only; leave the results files alone")
    p.add_argument("--results-dir", type=Path, default=harness.RESULTS_DIR, help="default: benchmarks/results")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.models = _csv(args.models) or list(QUICK_MODELS if args.quick else DEFAULT_MODELS)
    args.batch = args.batch or (2 if args.quick else 8)
    args.size = args.size or (64 if args.quick else 224)
    args.repeat = args.repeat or (2 if args.quick else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    wanted = _csv(args.providers) or [name for name, p in PROVIDERS.items() if p.default]
    unknown = sorted(set(wanted) - set(PROVIDERS))
    if unknown:
        p.error(f"--providers: unknown {', '.join(unknown)}; choose from {', '.join(PROVIDERS)}")
    args.providers = [name for name in PROVIDERS if name in wanted or name in LIMITS]
    args.no_write = args.no_write or args.quick
    return args


def _csv(text: str | None) -> list[str]:
    return [] if not text else [s.strip() for s in text.split(",") if s.strip()]


def spawn(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Run a worker process on ``spec``; its result lines (stderr passes through)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    rows = [json.loads(line[len(RESULT_PREFIX):]) for line in done.stdout.splitlines()
            if line.startswith(RESULT_PREFIX)]
    seen = {r["provider"] for r in rows}
    for provider in spec["providers"]:
        if provider not in seen:
            rows.append({"provider": provider, "status": "ERROR",
                         "message": f"worker exited with status {done.returncode} before reporting"})
    return rows


def measure_model(model: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    spec = {"model": model, "batch": args.batch, "size": args.size, "repeat": args.repeat,
            "warmup": args.warmup, "max_call_s": args.max_call_s, "device": args.device}
    if args.quick:  # one process for all providers: seconds, but memory only indicative
        print(f"running {model}: {', '.join(args.providers)} ...", file=sys.stderr, flush=True)
        rows = spawn({**spec, "providers": args.providers})
        for r in rows:
            r["memory_method"] = r.get("memory_method", "") + "; shared process (indicative)"
    else:
        rows = []
        for provider in args.providers:
            print(f"running {model} {provider} ...", file=sys.stderr, flush=True)
            rows += spawn({**spec, "providers": [provider]})
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else harness.cpu_model()
    for r in rows:
        p = PROVIDERS[r["provider"]]
        r.update(model=model, batch=args.batch, size=args.size, device=args.device, device_name=device_name,
                 library=p.library, method=p.method, note=p.note)
    add_ratios(rows, peaks=not args.quick)
    return rows


def add_ratios(rows: list[dict[str, Any]], peaks: bool = True) -> None:
    """``median_ratio``/``peak_ratio`` against the lower of the two limit runs (no peak
    ratios when ``peaks`` is false: providers that shared a process)."""
    limits = [r for r in rows if r["provider"] in LIMITS and r.get("median_ms")]
    best_time = min((r["median_ms"] for r in limits), default=None)
    best_peak = min((r["peak_mb"] for r in limits if r.get("peak_mb")), default=None)
    for r in rows:
        r["median_ratio"] = r["median_ms"] / best_time if best_time and r.get("median_ms") else None
        r["peak_ratio"] = r["peak_mb"] / best_peak if peaks and best_peak and r.get("peak_mb") is not None and \
            r.get("status") == "ok" else None


def evaluate_targets(rows: Sequence[Mapping[str, Any]], quick: bool = False) -> list[dict[str, Any]]:
    """PASS/MISS per model and target; SKIP for memory under --quick (shared process)."""
    verdicts = []
    for model in dict.fromkeys(r["model"] for r in rows):
        for what, (provider, key, limit) in TARGETS.items():
            row = next((r for r in rows if r["model"] == model and r["provider"] == provider), None)
            value = None if row is None else row.get(key)
            met = value is not None and value <= limit
            detail = "did not run" if row is None else (f"{value:.3f}x" if value is not None else row.get("status"))
            result = "PASS" if met else "MISS"
            if quick and key == "peak_ratio":
                result, detail = "SKIP", "not measured with --quick (providers share one process)"
            verdicts.append({"target": f"{provider} {what} <= {limit:g}x the limit's", "case": model,
                             "result": result, "detail": detail})
        times = {r["provider"]: r.get("median_ms") for r in rows if r["model"] == model}
        for provider, other, limit in RELATIVE_TARGETS:
            if provider not in times or other not in times:
                continue  # not asked for in this run
            value = times[provider] / times[other] if times[provider] and times[other] else None
            verdicts.append({"target": f"{provider} time <= {limit:.3g}x {other}'s", "case": model,
                             "result": "PASS" if value is not None and value <= limit else "MISS",
                             "detail": f"{value:.3f}x" if value is not None else "not timed"})
    return verdicts


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def model_table(rows: Sequence[Mapping[str, Any]]) -> str:
    header = ["provider", "library", "layers", "output", "median ms", "p20 ms", "p80 ms", "time vs limit",
              "peak MiB", "peak vs limit", "check"]
    body = []
    for r in rows:
        shape = r.get("output_shape")
        body.append([
            r["provider"], r["library"], str(r.get("layers", "-")), "x".join(map(str, shape[1:])) if shape else "-",
            _fmt(r.get("median_ms"), ".0f"), _fmt(r.get("p20_ms"), ".0f"), _fmt(r.get("p80_ms"), ".0f"),
            _fmt(r.get("median_ratio"), ".3f", "x"), _fmt(r.get("peak_mb"), ".0f"), _fmt(r.get("peak_ratio"), ".2f", "x"),
            r["status"] if not r.get("message") else f"{r['status']}: {r['message']}",
        ])
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, body)])


def notes_text(rows: Sequence[Mapping[str, Any]]) -> str:
    seen = dict.fromkeys(r["provider"] for r in rows)
    lines = [f"  {name}: {PROVIDERS[name].library + ' ' if PROVIDERS[name].library != '-' else ''}"
             f"{PROVIDERS[name].method}; {PROVIDERS[name].note}" for name in seen]
    methods = sorted({r.get("memory_method", "") for r in rows if r.get("memory_method")})
    return "\n".join(lines + [f"  peak memory: {m}" for m in methods])


def header_text(config: Mapping[str, Any], info: Mapping[str, Any]) -> str:
    return "\n".join([
        f"CAM methods: batch {config['batch']}, {config['size']}x{config['size']} float32 "
        f"on {config.get('device', 'cpu')} "
        f"({harness.machine_text(info['machine'])})",
        f"median of {config['repeat']} calls after {config['warmup']} warm-up (p20/p80 shown); peak memory = "
        + ("CUDA allocator peak of the calls above the allocation after setup" if config.get("device") == "cuda"
           else "resident high-water mark of the calls above the RSS after setup")
        + ", one fresh process per provider"
        + (" (--quick: one process per model)" if config.get("quick") else ""),
        "limit = forward (no-op forward hooks on every find_layers layer) + ONE torch.autograd.grad of the summed "
        "top-class logits to the input: camfast's gradient work without the CAM work; ratios use the lower of "
        "the limit and limit-after runs",
        f"{info['date']}, {harness.commit_text(info['git'])}, torch {info['versions']['torch']}, "
        f"python {info['versions']['python']}, {harness.build_text(info['native'])}, "
        + ", ".join(f"{k} {v}" for k, v in info["versions"].items() if k in ("grad-cam", "torchcam", "torchvision")),
    ])


def model_title(model: str, rows: Sequence[Mapping[str, Any]]) -> str:
    layers = next((r.get("layers") for r in rows if r["provider"] == "zoom_cam" or r["provider"] in LIMITS), None)
    return f"{model} ({layers} discovered layers; one-layer methods use the deepest)"


def render_markdown(data: Mapping[str, Any]) -> str:
    out = [f"# CAM methods benchmarks ({data['device_type']})", "",
           f"Generated from `methods-{data['device_type']}.json` by `benchmarks/methods.py`; do not edit.", ""]
    for run_id, run in sorted(data["runs"].items(), key=lambda kv: kv[1]["stamp"]["date"], reverse=True):
        rows = [r for r in data["rows"] if r["run"] == run_id]
        out += ["## " + run["stamp"]["date"], "", "```text", header_text(run["config"], run["stamp"]), "```", ""]
        for model in dict.fromkeys(r["model"] for r in rows):
            model_rows = [r for r in rows if r["model"] == model]
            out += [f"### {model_title(model, model_rows)}", "", model_table(model_rows), ""]
        out += ["```text", harness.targets_text(run.get("targets", [])), "", "providers:", notes_text(rows), "```", ""]
    return "\n".join(out)


def row_key(row: Mapping[str, Any]) -> tuple:
    return (row["model"], row["batch"], row["size"], row["provider"], row["device"], row["device_name"])


def write_results(rows: list[dict[str, Any]], config: dict[str, Any], info: dict[str, Any],
                  verdicts: list[dict[str, Any]], results_dir: Path) -> tuple[Path, Path]:
    """Merge the rows into ``methods-<device>.json`` (same model, batch, size, provider and
    machine replace earlier rows; runs left without rows are dropped) and rewrite the Markdown."""
    results_dir.mkdir(parents=True, exist_ok=True)
    device_type = config.get("device", "cpu")
    json_path, md_path = harness.results_paths(OP, device_type, results_dir)
    run_id = f"{info['date']}-{os.getpid()}"
    with harness._locked(results_dir):
        data = json.loads(json_path.read_text()) if json_path.exists() else {
            "op": OP, "device_type": device_type, "runs": {}, "rows": []}
        new = [{**r, "run": run_id} for r in rows]
        keys = {row_key(r) for r in new}
        data["rows"] = [r for r in data["rows"] if row_key(r) not in keys] + new
        data["runs"][run_id] = {"stamp": info, "config": config, "targets": verdicts}
        live = {r["run"] for r in data["rows"]}
        data["runs"] = {k: v for k, v in data["runs"].items() if k in live}
        atomic_write(json_path, json.dumps(data, indent=1) + "\n", fsync=True)
        atomic_write(md_path, render_markdown(data), fsync=True)
    return json_path, md_path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        run_worker(json.loads(args.worker))
        return 0
    info = harness.stamp(torch.device(args.device))
    info["versions"].update({k: harness.dist_version(k) for k in ("torchvision", "grad-cam", "torchcam")})
    load = harness.OtherLoad()
    rows: list[dict[str, Any]] = []
    for model in args.models:
        rows += measure_model(model, args)
    info["machine"]["other_busy_cores"] = load.cores()
    config = {"models": args.models, "batch": args.batch, "size": args.size, "dtype": "float32", "device": args.device,
              "repeat": args.repeat, "warmup": args.warmup, "quick": args.quick}
    if harness.busy(info["machine"]):
        harness.warn(f"other processes kept {info['machine']['other_busy_cores']:.2f} cores busy during the run: "
                     "they competed for the CPU, so the timings are noisy")
    if info["native"].get("matches_csrc") is False:
        harness.warn("camfast._C was built from an older csrc/; reinstall to benchmark the current kernels")

    print()
    print(header_text(config, info))
    for model in args.models:
        model_rows = [r for r in rows if r["model"] == model]
        print(f"\n{model_title(model, model_rows)}")
        print(model_table(model_rows))
    verdicts = evaluate_targets(rows, quick=args.quick)
    print()
    print(harness.targets_text(verdicts))
    print("\nproviders:")
    print(notes_text(rows))
    if not args.no_write:
        for path in write_results(rows, config, info, verdicts, args.results_dir):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
