"""The one-screen summary of ``scripts/gpu-check.sh``: its stages, then the figures.

Usage (the script calls it last):
    python benchmarks/gpu_check_summary.py --stages STAGES.tsv --results-dir DIR --device cuda
        --since 2026-01-01T00:00:00+00:00 [--title TEXT]

``STAGES.tsv`` has one line per stage: name, status (ok, FAIL, TIMEOUT, SKIP), seconds,
limit in seconds, a note. The figures come from the results files the benchmark stages
wrote into ``DIR`` during this run (runs stamped at or after ``--since``): per op and case
the fraction of the copy bandwidth each camfast provider reached (and the reference's), the
``zoom_cam`` time over the limit (forward + backward of the model) from ``methods``, and the
pseudo-label images/s. Exit status 1 when a stage failed or timed out, else 0.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cases as case_modules  # noqa: E402

#: Column order of the op table: camfast's providers, then the baseline.
OP_PROVIDERS = ("native", "triton", "triton-gather", "reference")
FAILED = ("FAIL", "TIMEOUT")


def read_stages(path: Path) -> list[dict[str, str]]:
    stages = []
    for line in path.read_text().splitlines():
        if line.strip():
            name, status, seconds, limit, note = (line.split("\t") + [""] * 5)[:5]
            stages.append({"name": name, "status": status, "seconds": seconds, "limit": limit, "note": note})
    return stages


def _when(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)


def _load(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def recent_runs(data: Mapping[str, Any], since: datetime.datetime) -> list[tuple[str, Mapping[str, Any]]]:
    """``(run id, run)`` of the runs stamped at or after ``since``, oldest first; ``runs`` is a
    mapping (op results, methods) or a list (pseudo-label)."""
    runs = data.get("runs", {})
    items = runs.items() if isinstance(runs, Mapping) else ((str(i), r) for i, r in enumerate(runs))
    kept = [(k, r) for k, r in items if _when(r["stamp"]["date"]) >= since]
    return sorted(kept, key=lambda kv: kv[1]["stamp"]["date"])


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def op_lines(results: Path, device: str, since: datetime.datetime) -> list[str]:
    lines = []
    for op in case_modules.available():
        data = _load(results / f"{op}-{device}.json")
        runs = dict(recent_runs(data, since)) if data else {}
        if not runs:
            lines.append(f"  {op:<24} no results from this run")
            continue
        copy = ", ".join(f"{r['copy']['gbps']:.0f}" for r in runs.values())
        lines.append(f"  {op}  (copy {copy} GB/s)")
        rows = [r for r in data["rows"] if r.get("run") in runs]
        for case in dict.fromkeys(r["case"] for r in rows):
            cells = []
            for provider in OP_PROVIDERS:
                row = next((r for r in rows if r["case"] == case and r["provider"] == provider), None)
                if row is None:
                    continue
                figure = _pct(row.get("copy_fraction")) if row.get("status") == "ok" else row.get("status", "?")
                cells.append(f"{provider} {figure}")
            lines.append(f"    {case:<22} " + "  ".join(cells))
    return lines


def methods_lines(results: Path, device: str, since: datetime.datetime) -> list[str]:
    data = _load(results / f"methods-{device}.json")
    runs = dict(recent_runs(data, since)) if data else {}
    rows = [r for r in data["rows"] if r.get("run") in runs] if runs else []
    zoom = [r for r in rows if r["provider"] == "zoom_cam"]
    if not zoom:
        return ["  zoom_cam vs limit: no results from this run"]
    out = []
    for r in zoom:
        limit = next((x for x in rows if x["model"] == r["model"] and x["provider"] == "limit"), {})
        ratio = r.get("median_ratio")
        out.append(f"  zoom_cam vs limit: {'-' if ratio is None else f'{ratio:.2f}x'} the time of forward + "
                   f"backward ({r['model']}, batch {r['batch']}, {r['size']}px: zoom_cam "
                   f"{r.get('median_ms') or 0:.1f} ms, limit {limit.get('median_ms') or 0:.1f} ms; "
                   f"{r.get('status')})")
    return out


def pseudo_label_lines(results: Path, device: str, since: datetime.datetime) -> list[str]:
    data = _load(results / f"pseudo_label-{device}.json")
    runs = recent_runs(data, since) if data else []
    if not runs:
        return ["  pseudo-label: no results from this run"]
    run = runs[-1][1]
    by = {r["provider"]: r for r in run["rows"]}
    zoom, limit, pipe = by.get("zoom_cam", {}), by.get("limit", {}), by.get("camfast pseudo-label", {})
    c = run["config"]
    return [f"  pseudo-label ({run['model']}, batch {c['batch']}, {c['size']}px): zoom_cam "
            f"{zoom.get('images_per_s', 0):.1f} images/s ({zoom.get('paired_vs_limit', 0):.2f}x the limit's "
            f"{limit.get('images_per_s', 0):.1f}); end to end {pipe.get('images_per_s', 0):.1f} images/s"]


def stage_table(stages: Sequence[Mapping[str, str]]) -> list[str]:
    lines = [f"  {'stage':<14} {'status':<8} {'time':>6} {'limit':>6}  note"]
    for s in stages:
        limit = f"{s['limit']}s" if s["limit"] not in ("", "-") else "-"
        lines.append(f"  {s['name']:<14} {s['status']:<8} {s['seconds'] + 's':>6} {limit:>6}  {s['note']}")
    return lines


def summary(stages: Sequence[Mapping[str, str]], results: Path, device: str, since: datetime.datetime,
            title: str = "") -> list[str]:
    total = sum(float(s["seconds"] or 0) for s in stages)
    lines = [f"camfast GPU check{': ' + title if title else ''} ({total / 60:.1f} min)"]
    lines += stage_table(stages)
    lines += [f"op benchmarks (fraction of the copy bandwidth measured in the same run; {device}):"]
    lines += op_lines(results, device, since)
    lines += methods_lines(results, device, since)
    lines += pseudo_label_lines(results, device, since)
    lines += [f"results: {results}/*-{device}.{{md,json}}"]
    return lines


def parse_args(argv: Iterable[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stages", type=Path, required=True)
    p.add_argument("--results-dir", type=Path, required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--since", required=True, help="ISO time the check started (UTC offset included)")
    p.add_argument("--title", default="")
    return p.parse_args(list(argv) if argv is not None else None)


def main(argv: Iterable[str] | None = None) -> int:
    args = parse_args(argv)
    stages = read_stages(args.stages)
    print("\n".join(summary(stages, args.results_dir, args.device, _when(args.since), args.title)))
    return 1 if any(s["status"] in FAILED for s in stages) else 0


if __name__ == "__main__":
    sys.exit(main())
