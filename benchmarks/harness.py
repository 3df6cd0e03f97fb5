"""Benchmark harness shared by every camfast op: check first, then time, then report.

The unit is a :class:`Case`: one op in one configuration (e.g. ``grad_weighted_map``,
mode ``zoom``, forward), with a setup that makes its inputs, the providers to compare
(``native``, ``triton``, ``reference``, ``reference-compiled``), the reference function
that defines the right answer, and a model of the bytes the op must move.

For every provider of a case the harness

1. checks the provider's output against the reference, computed in float64 on the same
   inputs, with a per-dtype ``(atol, rtol)``; a provider that fails is reported as FAILED
   and never timed;
2. times it after warm-up: median, p20/p80 (as Liger-Kernel reports) and min over
   ``repeat`` calls, with ``time.perf_counter`` on CPU and CUDA events on GPU (the L2
   cache is flushed before each call, as ``triton.testing.do_bench`` does);
3. turns the median into GB/s with the case's bytes model and into a fraction of the copy
   bandwidth (``dst.copy_(src)``, read + write) measured in the same run, before and after
   the cases (the better of the two counts: a lower one means something else was running),
   on a buffer as large as the op's biggest input, so the ratio compares like with like
   (both in cache or both in DRAM);
4. on CUDA, records the peak memory a call allocates above what was allocated before it.

Rows are stamped with the machine, versions and git commit (:func:`stamp`) and merged
into ``results/<op>-<device type>.json`` (+ a Markdown rendering) by :func:`write_results`.
``run.py`` is the command line; ``conftest.py`` drives the same cases through
pytest-benchmark. See README.md for how to add an op.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from camfast.utils.io import atomic_write
# re-exported for the benchmark scripts (harness.stamp, harness.OtherLoad, ...)
from camfast.evaluation.provenance import OtherLoad, cpu_model, dist_version, stamp  # noqa: F401
from camfast.ops import available_backends, use_backend

RESULTS_DIR = Path(__file__).resolve().parent / "results"

Shape = tuple[int, ...]
Inputs = tuple[Any, ...]

#: ``(atol, rtol)`` per input dtype for the correctness check: ``|x - ref| <= atol + rtol * |ref|``
#: with ``ref`` computed in float64. Sized for float32 accumulation over a few hundred terms and
#: one final rounding to the output dtype (bfloat16 keeps 8 bits of mantissa, float16 11).
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-9, 1e-9),
    torch.float32: (1e-4, 1e-4),
    torch.float16: (1e-3, 2e-3),
    torch.bfloat16: (1e-2, 1.6e-2),
}
DTYPES = {str(d).removeprefix("torch."): d for d in TOLERANCES}

#: Bytes written before each timed CUDA call to evict the inputs from L2 (as do_bench does).
L2_FLUSH_BYTES = 256 * 2**20

#: Providers named after a camfast backend run the op under ``use_backend(name)``.
BACKEND_PROVIDERS = ("native", "triton")
BASELINE = "reference"


# --------------------------------------------------------------------------- cases


@dataclasses.dataclass(frozen=True, eq=False)  # identity hash: cases key caches
class Case:
    """One op in one configuration, and the providers to compare on it.

    Attributes:
        op: the op's name, e.g. ``"grad_weighted_map"`` (names the results file).
        name: the configuration, e.g. ``"zoom-forward"``; unique within the op.
        setup: ``setup(shape, dtype, device) -> inputs``, a tuple passed as ``provider(*inputs)``.
            It must also work on the ``meta`` device (use :func:`randn`), which the harness
            uses to size the copy-bandwidth buffer without allocating anything.
        providers: name -> callable taking ``*inputs``; :func:`standard_providers` builds the
            usual four. Providers named ``native``/``triton`` are skipped where that camfast
            backend cannot run (and ``triton`` is skipped off CUDA: the interpreter is too slow).
        reference: the function whose float64 result defines the right answer.
        bytes_moved: ``bytes_moved(inputs) -> int``, the least traffic the op needs (each
            input read once, each output written once), for GB/s.
        tolerance: ``(atol, rtol)`` per dtype where :data:`TOLERANCES` does not fit.
        params: what distinguishes the case, shown in tables and used by ``run.py`` filters
            (e.g. ``{"mode": "zoom", "direction": "forward"}``).
    """

    op: str
    name: str
    setup: Callable[[Shape, torch.dtype, torch.device], Inputs]
    providers: Mapping[str, Callable[..., Any]]
    reference: Callable[..., Any]
    bytes_moved: Callable[[Inputs], int]
    tolerance: Mapping[torch.dtype, tuple[float, float]] | None = None
    params: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def tolerance_for(self, dtype: torch.dtype) -> tuple[float, float]:
        table = {**TOLERANCES, **(self.tolerance or {})}
        return table[dtype]


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """Where and how a run measures: one shape, dtype and device for all its cases."""

    shape: Shape
    dtype: torch.dtype
    device: torch.device
    repeat: int = 20
    warmup: int = 3

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


def randn(shape: Sequence[int], dtype: torch.dtype, device: torch.device, seed: int = 0) -> torch.Tensor:
    """Seeded standard-normal tensor; on the ``meta`` device just an empty one of that shape."""
    if torch.device(device).type == "meta":
        return torch.empty(tuple(shape), dtype=dtype, device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(tuple(shape), dtype=dtype, device=device, generator=gen)


def nbytes(*tensors: torch.Tensor) -> int:
    """Total storage the tensors' elements take (for bytes models)."""
    return sum(t.numel() * t.element_size() for t in tensors)


def on_backend(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` run inside ``camfast.ops.use_backend(name)``."""

    @functools.wraps(fn)
    def call(*inputs: Any) -> Any:
        with use_backend(name):
            return fn(*inputs)

    return call


@functools.cache
def compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.compile(fn)``, one wrapper per function (the first call compiles; the check does it)."""
    return torch.compile(fn, dynamic=False)


def standard_providers(op_call: Callable[..., Any], reference_fn: Callable[..., Any]) -> dict[str, Callable[..., Any]]:
    """The usual providers: ``op_call`` on the native and Triton backends, ``reference_fn``
    eager and under ``torch.compile``. Both callables take the case's ``*inputs``."""
    return {
        **{name: on_backend(name, op_call) for name in BACKEND_PROVIDERS},
        BASELINE: reference_fn,
        "reference-compiled": compiled(reference_fn),
    }


def unavailable_reason(provider: str, device: torch.device) -> str | None:
    """Why ``provider`` is skipped on ``device``, or None when it runs. A provider named
    ``<backend>-<variant>`` (e.g. ``triton-gather``) needs that backend too."""
    backend = provider.split("-")[0]
    if backend not in BACKEND_PROVIDERS:
        return None
    if backend == "triton" and device.type != "cuda":
        return "Triton is benchmarked on CUDA only (the CPU interpreter is far too slow)"
    if backend not in available_backends(device):
        return f"camfast backend {backend!r} cannot run on {device.type}"
    return None


def runnable_providers(case: Case, device: torch.device) -> tuple[dict[str, Callable[..., Any]], dict[str, str]]:
    """``(providers that run on device, {skipped provider: reason})``."""
    runnable, skipped = {}, {}
    for name, fn in case.providers.items():
        reason = unavailable_reason(name, device)
        if reason is None:
            runnable[name] = fn
        else:
            skipped[name] = reason
    return runnable, skipped


def max_input_bytes(cases: Iterable[Case], config: BenchConfig) -> int:
    """The largest single input tensor of any case, sized on the meta device (no allocation)."""
    meta = torch.device("meta")
    sizes = [
        nbytes(x)
        for case in cases
        for x in case.setup(config.shape, config.dtype, meta)
        if isinstance(x, torch.Tensor)
    ]
    return max(sizes, default=0)


# --------------------------------------------------------------------------- correctness


@dataclasses.dataclass(frozen=True)
class Check:
    """Outcome of comparing a provider's output(s) with the float64 reference."""

    ok: bool
    max_abs: float | None = None
    max_rel: float | None = None
    message: str = ""

    @property
    def status(self) -> str:
        if self.ok:
            return "ok"
        return "ERROR" if self.max_abs is None else "FAILED"


def _tensors(value: Any) -> list[torch.Tensor]:
    return [value] if isinstance(value, torch.Tensor) else list(value)


def _float64(inputs: Inputs) -> Inputs:
    return tuple(x.double() if isinstance(x, torch.Tensor) and x.is_floating_point() else x for x in inputs)


def expected_output(case: Case, inputs: Inputs) -> list[torch.Tensor]:
    """The case's reference evaluated in float64 on the same inputs (exactly representable)."""
    return _tensors(case.reference(*_float64(inputs)))


def compare(outputs: Any, expected: Sequence[torch.Tensor], atol: float, rtol: float) -> Check:
    """Elementwise ``|x - ref| <= atol + rtol * |ref|`` for every output; NaNs must coincide.

    ``max_rel`` is taken over elements with ``|ref| > atol / rtol``, where the relative term of
    the tolerance dominates (near zero a relative error says nothing).
    """
    got = _tensors(outputs)
    if len(got) != len(expected):
        return Check(False, message=f"{len(got)} outputs, expected {len(expected)}")
    max_abs = max_rel = 0.0
    ok = True
    for i, (x, ref) in enumerate(zip(got, expected)):
        if x.shape != ref.shape:
            return Check(False, message=f"output {i} has shape {tuple(x.shape)}, expected {tuple(ref.shape)}")
        x = x.double()
        nan = x.isnan() | ref.isnan()
        if not torch.equal(x.isnan(), ref.isnan()):
            ok = False
        err = (x - ref).abs().masked_fill(nan, 0.0)
        mag = ref.abs().masked_fill(nan, 0.0)
        ok = ok and bool((err <= atol + rtol * mag).all())
        max_abs = max(max_abs, float(err.max()))
        big = mag > atol / rtol
        if bool(big.any()):
            max_rel = max(max_rel, float((err[big] / mag[big]).max()))
    message = "" if ok else f"exceeds atol={atol:g}, rtol={rtol:g} (or NaNs differ)"
    return Check(ok, max_abs, max_rel, message)


def check_provider(case: Case, fn: Callable[..., Any], inputs: Inputs, expected: Sequence[torch.Tensor]) -> Check:
    """Run ``fn`` once (this also compiles ``reference-compiled``) and compare with ``expected``."""
    try:
        outputs = fn(*inputs)
    except Exception as exc:  # a crashing provider is reported, not fatal to the run
        return Check(False, message=f"{type(exc).__name__}: {exc}".splitlines()[0])
    atol, rtol = case.tolerance_for(inputs_dtype(inputs))
    return compare(outputs, expected, atol, rtol)


def inputs_dtype(inputs: Inputs) -> torch.dtype:
    return next(x.dtype for x in inputs if isinstance(x, torch.Tensor) and x.is_floating_point())


# --------------------------------------------------------------------------- timing


@dataclasses.dataclass(frozen=True)
class Timing:
    """Milliseconds per call over ``n`` timed calls."""

    median_ms: float
    p20_ms: float
    p80_ms: float
    min_ms: float
    n: int

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> Timing:
        median, p20, p80 = np.percentile(np.asarray(samples_ms), [50, 20, 80])
        return cls(float(median), float(p20), float(p80), float(min(samples_ms)), len(samples_ms))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def measure(fn: Callable[..., Any], inputs: Inputs, device: torch.device, repeat: int, warmup: int) -> Timing:
    """Time ``fn(*inputs)``: ``warmup`` untimed calls, then ``repeat`` timed ones."""
    for _ in range(warmup):
        fn(*inputs)
    synchronize(device)
    samples: list[float] = []
    with _gc_paused():
        if device.type == "cuda":
            flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.int8, device=device)
            for _ in range(repeat):
                flush.zero_()
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn(*inputs)
                end.record()
                end.synchronize()
                samples.append(start.elapsed_time(end))
        else:
            for _ in range(repeat):
                t0 = time.perf_counter()
                fn(*inputs)
                samples.append((time.perf_counter() - t0) * 1e3)
    return Timing.from_samples(samples)


@dataclasses.dataclass(frozen=True)
class CopyBandwidth:
    """``dst.copy_(src)`` on ``buffer_bytes`` bytes; ``gbps`` counts read + write."""

    gbps: float
    buffer_bytes: int
    timing: Timing
    each_gbps: tuple[float, ...] = ()  # every measurement, when this is the best of several

    @classmethod
    def best(cls, *measured: CopyBandwidth) -> CopyBandwidth:
        return dataclasses.replace(max(measured, key=lambda c: c.gbps), each_gbps=tuple(c.gbps for c in measured))


def copy_buffers(buffer_bytes: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dst, src)`` float32 buffers of at least ``buffer_bytes`` bytes, pages already touched."""
    src = torch.ones(max(1, -(-buffer_bytes // 4)), dtype=torch.float32, device=device)
    return torch.zeros_like(src), src


def copy_bandwidth(buffer_bytes: int, config: BenchConfig) -> CopyBandwidth:
    """The copy bandwidth of ``config.device`` on a buffer of ``buffer_bytes`` (bytes = read + write)."""
    dst, src = copy_buffers(buffer_bytes, config.device)
    timing = measure(dst.copy_, (src,), config.device, config.repeat, config.warmup)
    return CopyBandwidth(2 * nbytes(src) / (timing.median_ms * 1e-3) / 1e9, nbytes(src), timing)


def peak_memory_mb(fn: Callable[..., Any], inputs: Inputs, device: torch.device) -> float | None:
    """MiB a call allocates above what was allocated before it (CUDA only; None elsewhere)."""
    if device.type != "cuda":
        return None
    synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn(*inputs)
    synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


# --------------------------------------------------------------------------- running


@dataclasses.dataclass
class Row:
    """One provider on one case: check result, timing and derived figures (JSON-serialisable)."""

    op: str
    case: str
    params: dict[str, str]
    provider: str
    shape: list[int]
    dtype: str
    device: str
    device_name: str
    status: str  # "ok", "FAILED" (wrong answer) or "ERROR" (raised)
    max_abs: float | None = None
    max_rel: float | None = None
    message: str = ""
    bytes: int = 0
    n: int = 0
    median_ms: float | None = None
    p20_ms: float | None = None
    p80_ms: float | None = None
    min_ms: float | None = None
    gbps: float | None = None
    copy_fraction: float | None = None
    speedup: float | None = None
    peak_mb: float | None = None
    run: str = ""

    def key(self) -> tuple:
        """Rows with the same key replace each other in the results file."""
        return (self.case, self.provider, tuple(self.shape), self.dtype, self.device, self.device_name)


@dataclasses.dataclass
class Report:
    """Everything one run measured for one op."""

    op: str
    config: BenchConfig
    copy: CopyBandwidth
    rows: list[Row]
    skipped: dict[str, str]
    stamp: dict[str, Any]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def run_case(case: Case, config: BenchConfig) -> tuple[list[Row], dict[str, str]]:
    """Check, then time, every runnable provider of ``case``; returns rows and skipped providers."""
    providers, skipped = runnable_providers(case, config.device)
    inputs = case.setup(config.shape, config.dtype, config.device)
    expected = expected_output(case, inputs)
    bytes_moved = case.bytes_moved(inputs)
    base = dict(
        op=case.op, case=case.name, params=dict(case.params), shape=list(config.shape),
        dtype=config.dtype_name, device=config.device.type, device_name=device_name(config.device),
        bytes=bytes_moved,
    )
    rows = []
    for name, fn in providers.items():
        check = check_provider(case, fn, inputs, expected)
        row = Row(**base, provider=name, status=check.status, max_abs=check.max_abs,
                  max_rel=check.max_rel, message=check.message)
        if check.ok:
            t = measure(fn, inputs, config.device, config.repeat, config.warmup)
            row.n, row.median_ms, row.p20_ms, row.p80_ms, row.min_ms = t.n, t.median_ms, t.p20_ms, t.p80_ms, t.min_ms
            row.gbps = bytes_moved / (t.median_ms * 1e-3) / 1e9
            row.peak_mb = peak_memory_mb(fn, inputs, config.device)
        rows.append(row)
    baseline = next((r for r in rows if r.provider == BASELINE and r.median_ms), None)
    for row in rows:
        if baseline is not None and row.median_ms:
            row.speedup = baseline.median_ms / row.median_ms
    return rows, skipped


def run_cases(op: str, cases: Sequence[Case], config: BenchConfig,
              progress: Callable[[str], None] | None = None) -> Report:
    """Every case between two copy-bandwidth measurements; ``progress`` is told what runs next."""
    info = stamp(config.device)
    load = OtherLoad()
    buffer_bytes = max_input_bytes(cases, config)
    before = copy_bandwidth(buffer_bytes, config)
    rows: list[Row] = []
    skipped: dict[str, str] = {}
    for case in cases:
        if progress:
            progress(f"{op} {case.name}")
        case_rows, case_skipped = run_case(case, config)
        rows += case_rows
        skipped.update(case_skipped)
        synchronize(config.device)
    after = copy_bandwidth(buffer_bytes, config)
    copy = CopyBandwidth.best(before, after)
    info["machine"]["other_busy_cores"] = load.cores()
    for row in rows:
        if row.gbps is not None:
            row.copy_fraction = row.gbps / copy.gbps
    return Report(op, config, copy, rows, skipped, info)


# --------------------------------------------------------------------------- targets


@dataclasses.dataclass(frozen=True)
class Target:
    """A performance goal for one provider on one device type, checked on every case's row.

    Applies only to runs at ``shape``/``dtype`` when those are given (a goal set above the
    cache size says nothing about a shape that fits in it). Printed PASS/MISS, never asserted.
    """

    provider: str
    device_type: str
    min_speedup: float | None = None  # vs the eager reference
    min_copy_fraction: float | None = None  # of the copy bandwidth measured in the same run
    shape: Shape | None = None
    dtype: torch.dtype | None = None

    def describe(self) -> str:
        goals = []
        if self.min_speedup is not None:
            goals.append(f">= {self.min_speedup:g}x the eager reference")
        if self.min_copy_fraction is not None:
            goals.append(f">= {self.min_copy_fraction:.0%} of copy bandwidth")
        where = self.device_type
        if self.shape is not None:
            where += f" at {list(self.shape)}"
        if self.dtype is not None:
            where += f" {str(self.dtype).removeprefix('torch.')}"
        return f"{self.provider} {' and '.join(goals)} ({where})"

    def applies(self, config: BenchConfig) -> bool:
        return (
            config.device.type == self.device_type
            and (self.shape is None or tuple(self.shape) == tuple(config.shape))
            and (self.dtype is None or self.dtype == config.dtype)
        )

    def verdict(self, row: Row) -> tuple[bool, str]:
        """``(met, explanation)`` for a row of this target's provider."""
        if row.status != "ok":
            return False, f"check {row.status}"
        parts, met = [], True
        if self.min_speedup is not None:
            met &= (row.speedup or 0.0) >= self.min_speedup
            parts.append(f"{row.speedup or 0.0:.2f}x" if row.speedup else "no baseline")
        if self.min_copy_fraction is not None:
            met &= (row.copy_fraction or 0.0) >= self.min_copy_fraction
            parts.append(f"{row.copy_fraction or 0.0:.0%} of copy")
        return met, ", ".join(parts)


def evaluate_targets(targets: Sequence[Target], report: Report) -> list[dict[str, Any]]:
    """One verdict per (applicable target, case); targets of a provider that did not run are MISS."""
    verdicts = []
    for target in targets:
        if not target.applies(report.config):
            continue
        cases = dict.fromkeys(r.case for r in report.rows)
        for case in cases:
            row = next((r for r in report.rows if r.case == case and r.provider == target.provider), None)
            met, why = target.verdict(row) if row else (False, "did not run")
            verdicts.append({"target": target.describe(), "case": case,
                             "result": "PASS" if met else "MISS", "detail": why})
    return verdicts


# --------------------------------------------------------------------------- provenance
# cpu_model, OtherLoad, native_build and stamp come from camfast._provenance (imported above),
# which the package's own result writers (camfast eval) use too.


# --------------------------------------------------------------------------- reporting


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def case_table(rows: Sequence[Row]) -> str:
    """Markdown table of one case's providers, side by side."""
    show_peak = any(r.peak_mb is not None for r in rows)
    header = ["provider", "median ms", "p20 ms", "p80 ms", "min ms", "GB/s", "% copy", "vs reference",
              *(["peak MiB"] if show_peak else []), "check", "max abs", "max rel"]
    body = []
    for r in rows:
        body.append([
            r.provider, _fmt(r.median_ms, ".3f"), _fmt(r.p20_ms, ".3f"), _fmt(r.p80_ms, ".3f"), _fmt(r.min_ms, ".3f"),
            _fmt(r.gbps, ".1f"), _fmt(None if r.copy_fraction is None else 100 * r.copy_fraction, ".0f", "%"),
            _fmt(r.speedup, ".2f", "x"), *([_fmt(r.peak_mb, ".1f")] if show_peak else []),
            r.status if not r.message else f"{r.status}: {r.message}", _fmt(r.max_abs, ".1e"), _fmt(r.max_rel, ".1e"),
        ])
    widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, body)])


def machine_text(machine: Mapping[str, Any]) -> str:
    if machine.get("gpu"):
        return machine["gpu"]
    load = machine.get("other_busy_cores")
    return (f"{machine['cpu']}, {machine['cores']} cores, {machine['torch_threads']} torch threads"
            + ("" if load is None else f", other processes busy {load:.2f} cores"))


def busy(machine: Mapping[str, Any]) -> bool:
    """Whether other processes kept more than a tenth of a core busy, on average, during the run."""
    return (machine.get("other_busy_cores") or 0.0) > 0.1


def build_text(native: Mapping[str, Any]) -> str:
    """The loaded native build, flagged STALE when ``csrc/`` no longer matches it."""
    if not native.get("loaded"):
        return "camfast._C not loaded"
    stale = " (STALE: csrc/ changed since the build)" if native.get("matches_csrc") is False else ""
    return f"camfast._C {native['source_hash'][:12]}{stale}"


def commit_text(git: Mapping[str, Any]) -> str:
    return f"commit {git['commit']}{' (dirty)' if git['dirty'] else ''}"


def run_header(op: str, config: BenchConfig | Mapping[str, Any], copy: Mapping[str, Any],
               info: Mapping[str, Any]) -> str:
    """Three lines naming the run: what and where, the copy bandwidth, provenance."""
    cfg = config if isinstance(config, Mapping) else config_dict(config)
    before_after = " / ".join(f"{g:.1f}" for g in copy.get("each_gbps", ()))
    return "\n".join([
        f"{op}: shape {cfg['shape']} {cfg['dtype']} on {cfg['device']} ({machine_text(info['machine'])})",
        f"copy bandwidth {copy['gbps']:.1f} GB/s (dst.copy_(src) on {copy['buffer_bytes'] / 1e6:.1f} MB, "
        f"read + write, median of {copy['n']}; before/after the cases: {before_after})",
        f"{info['date']}, {commit_text(info['git'])}, torch {info['versions']['torch']}, "
        f"python {info['versions']['python']}, {build_text(info['native'])}",
    ])


def config_dict(config: BenchConfig) -> dict[str, Any]:
    return {"shape": list(config.shape), "dtype": config.dtype_name, "device": str(config.device),
            "repeat": config.repeat, "warmup": config.warmup}


def copy_dict(copy: CopyBandwidth) -> dict[str, Any]:
    return {"gbps": copy.gbps, "buffer_bytes": copy.buffer_bytes, "each_gbps": list(copy.each_gbps),
            **dataclasses.asdict(copy.timing)}


def group_by_case(rows: Iterable[Row]) -> dict[str, list[Row]]:
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.case, []).append(row)
    return groups


def targets_text(verdicts: Sequence[Mapping[str, Any]]) -> str:
    if not verdicts:
        return "targets: none apply to this configuration"
    passed = sum(v["result"] == "PASS" for v in verdicts)
    lines = [f"targets: {passed}/{len(verdicts)} PASS"]
    lines += [f"  {v['result']}  {v['case']:<20} {v['target']}: {v['detail']}" for v in verdicts]
    return "\n".join(lines)


# --------------------------------------------------------------------------- results files




@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise read-modify-write of the results files between processes (POSIX only)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no locking
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def render_markdown(data: Mapping[str, Any]) -> str:
    """The Markdown view of a results file: one section per run, newest first."""
    out = [f"# {data['op']} benchmarks ({data['device_type']})", "",
           f"Generated from `{data['op']}-{data['device_type']}.json` by `benchmarks/run.py`; do not edit.", ""]
    rows = [Row(**r) for r in data["rows"]]
    for run_id, run in sorted(data["runs"].items(), key=lambda kv: kv[1]["stamp"]["date"], reverse=True):
        out += ["## " + run["stamp"]["date"], "", "```text",
                run_header(data["op"], run["config"], run["copy"], run["stamp"]), "```", ""]
        for case, case_rows in group_by_case(r for r in rows if r.run == run_id).items():
            out += [f"### {case}", "", case_table(case_rows), ""]
        out += ["```text", targets_text(run.get("targets", [])), "```", ""]
    return "\n".join(out)


def results_paths(op: str, device_type: str, results_dir: Path = RESULTS_DIR) -> tuple[Path, Path]:
    stem = results_dir / f"{op}-{device_type}"
    return stem.with_suffix(".json"), stem.with_suffix(".md")


def write_results(report: Report, verdicts: Sequence[Mapping[str, Any]],
                  results_dir: Path = RESULTS_DIR) -> tuple[Path, Path]:
    """Merge the report into ``<op>-<device type>.json`` (rows with the same key are replaced,
    runs left without rows dropped) and rewrite the Markdown view; both written atomically."""
    results_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = results_paths(report.op, report.config.device.type, results_dir)
    run_id = f"{report.stamp['date']}-{os.getpid()}"
    with _locked(results_dir):
        data = json.loads(json_path.read_text()) if json_path.exists() else {
            "op": report.op, "device_type": report.config.device.type, "runs": {}, "rows": []}
        new_rows = [dataclasses.replace(r, run=run_id) for r in report.rows]
        new_keys = {r.key() for r in new_rows}
        kept = [r for r in map(lambda d: Row(**d), data["rows"]) if r.key() not in new_keys]
        data["rows"] = [dataclasses.asdict(r) for r in kept + new_rows]
        data["runs"][run_id] = {"stamp": report.stamp, "config": config_dict(report.config),
                                "copy": copy_dict(report.copy), "targets": list(verdicts)}
        live = {r["run"] for r in data["rows"]}
        data["runs"] = {k: v for k, v in data["runs"].items() if k in live}
        atomic_write(json_path, json.dumps(data, indent=1) + "\n", fsync=True)
        atomic_write(md_path, render_markdown(data), fsync=True)
    return json_path, md_path


# --------------------------------------------------------------------------- configuration


def parse_shape(text: str) -> Shape:
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(",") if s.strip())
    except ValueError:
        raise ValueError(f"shape must be comma-separated integers like 32,256,56,56; got {text!r}") from None
    if not shape or min(shape) < 1:
        raise ValueError(f"shape must be positive integers; got {text!r}")
    return shape


def parse_dtype(text: str) -> torch.dtype:
    if text not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {text!r}")
    return DTYPES[text]


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def make_config(op_module: Any, *, shape: str | None = None, dtype: str | None = None, device: str | None = None,
                quick: bool = False, repeat: int | None = None) -> BenchConfig:
    """A run's configuration from textual options; defaults come from the op's case module
    (``DEFAULT_SHAPE``, ``QUICK_SHAPE``). ``quick`` picks the small shape and few repeats."""
    return BenchConfig(
        shape=parse_shape(shape) if shape else (op_module.QUICK_SHAPE if quick else op_module.DEFAULT_SHAPE),
        dtype=parse_dtype(dtype or "float32"),
        device=torch.device(device) if device else default_device(),
        repeat=repeat or (10 if quick else 20),
        warmup=2 if quick else 3,
    )


def env_config(op_module: Any) -> BenchConfig:
    """:func:`make_config` from ``CAMFAST_BENCH_SHAPE``, ``_DTYPE``, ``_DEVICE`` and ``_QUICK=1``."""
    env = os.environ.get
    return make_config(op_module, shape=env("CAMFAST_BENCH_SHAPE"), dtype=env("CAMFAST_BENCH_DTYPE"),
                       device=env("CAMFAST_BENCH_DEVICE"), quick=env("CAMFAST_BENCH_QUICK") == "1")


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)
