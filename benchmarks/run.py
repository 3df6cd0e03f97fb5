"""Benchmark one camfast op, provider by provider, and record the results.

Usage:
    python benchmarks/run.py grad_weighted_map [--shape 32,256,56,56] [--dtype float32]
        [--device cpu] [--modes zoom,gradcam,layercam] [--directions forward,backward]
        [--providers native,reference] [--repeat N] [--quick] [--no-write]

Prints, for every case (e.g. mode and direction), one row per provider: median, p20/p80
and min milliseconds, GB/s, the fraction of the copy bandwidth measured in the same run,
the speed-up over the eager reference and the correctness check; then PASS/MISS for the
op's performance targets (never a failure exit: targets are goals, not tests). Unless
``--no-write``, merges the rows into ``benchmarks/results/<op>-<device type>.json`` / ``.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cases as case_modules  # noqa: E402
import harness  # noqa: E402

#: Command-line filters on ``Case.params``: option -> parameter name.
PARAM_FILTERS = {"modes": "mode", "directions": "direction"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("op", choices=case_modules.available(), help="the op to benchmark")
    p.add_argument("--shape", help="comma-separated input shape (default: the op's DEFAULT_SHAPE)")
    p.add_argument("--dtype", default="float32", choices=list(harness.DTYPES))
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    for option, param in PARAM_FILTERS.items():
        p.add_argument(f"--{option}", help=f"comma-separated {param}s to run (default: all)")
    p.add_argument("--providers", help="comma-separated providers to run (default: all that can run)")
    p.add_argument("--repeat", type=int, help="timed calls per provider (default 20, 10 with --quick)")
    p.add_argument("--quick", action="store_true", help="small shape and few repeats: a smoke test in seconds")
    p.add_argument("--no-write", action="store_true", help="print only; leave the results files alone")
    p.add_argument("--results-dir", type=Path, default=harness.RESULTS_DIR, help="default: benchmarks/results")
    return p.parse_args(argv)


def _csv(text: str | None) -> list[str] | None:
    return None if text is None else [s.strip() for s in text.split(",") if s.strip()]


def _validated(option: str, wanted: list[str], known: set[str]) -> list[str]:
    unknown = sorted(set(wanted) - known)
    if unknown:
        raise SystemExit(f"--{option}: unknown {', '.join(unknown)}; choose from {', '.join(sorted(known)) or 'none'}")
    return wanted


def select_cases(all_cases: list[harness.Case], args: argparse.Namespace) -> list[harness.Case]:
    """The cases whose params pass the ``--modes``/``--directions`` filters, providers trimmed
    to ``--providers``; a name that matches nothing is an error listing the choices."""
    selected = all_cases
    for option, param in PARAM_FILTERS.items():
        wanted = _csv(getattr(args, option))
        if wanted is not None:
            _validated(option, wanted, {c.params[param] for c in all_cases if param in c.params})
            selected = [c for c in selected if c.params.get(param) in wanted]
    providers = _csv(args.providers)
    if providers is not None:
        _validated("providers", providers, {name for c in all_cases for name in c.providers})
        selected = [dataclasses.replace(c, providers={k: v for k, v in c.providers.items() if k in providers})
                    for c in selected]
    return selected


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    module = case_modules.load(args.op)
    try:
        config = harness.make_config(module, shape=args.shape, dtype=args.dtype, device=args.device,
                                     quick=args.quick, repeat=args.repeat)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    selected = select_cases(module.make_cases(), args)

    report = harness.run_cases(args.op, selected, config,
                               progress=lambda what: print(f"running {what} ...", file=sys.stderr, flush=True))
    if harness.busy(report.stamp["machine"]):
        harness.warn(f"other processes kept {report.stamp['machine']['other_busy_cores']:.2f} cores busy during "
                     "the run: they competed for the CPU, so timings (and the copy bandwidth) are noisy")
    if report.stamp["native"].get("matches_csrc") is False:
        harness.warn("camfast._C was built from an older csrc/; reinstall to benchmark the current kernels")

    print()
    print(harness.run_header(args.op, config, harness.copy_dict(report.copy), report.stamp))
    for case, rows in harness.group_by_case(report.rows).items():
        print(f"\n{case}")
        print(harness.case_table(rows))
    for provider, reason in report.skipped.items():
        print(f"\nskipped {provider}: {reason}")

    verdicts = harness.evaluate_targets(module.TARGETS, report)
    print()
    print(harness.targets_text(verdicts))
    not_applied = [t.describe() for t in module.TARGETS if not t.applies(config)]
    if not_applied:
        print("not evaluated here: " + "; ".join(not_applied))

    if not args.no_write:
        for path in harness.write_results(report, verdicts, args.results_dir):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
