"""The WSOL benchmark table: ``python benchmarks/wsol_table.py`` == ``camfast eval synthetic``.

Trains the small GAP / TAP / Puzzle-CAM classifiers on SyntheticWSOL (or reuses their
checkpoints in ``build/wsol_checkpoints``), scores every CAM method on the held-out split and
writes ``benchmarks/results/wsol_table.{md,json,png}``. Extra arguments go to
``camfast eval`` (``--quick``, ``--retrain``, ``--out DIR``, or ``--dataset cub --root DIR
--model SPEC`` for real data). The logic lives in :mod:`camfast.wsol`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    from camfast.cli import main as cli_main

    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a in ("--dataset", "synthetic", "voc", "cub", "imagenet", "openimages") or a.startswith("--dataset=")
               for a in argv):
        argv.insert(0, "synthetic")
    if not any(a == "--out" or a.startswith("--out=") for a in argv):
        argv += ["--out", os.fspath(REPO / "benchmarks" / "results")]
    if not any(a == "--checkpoints" or a.startswith("--checkpoints=") for a in argv):
        argv += ["--checkpoints", os.fspath(REPO / "build" / "wsol_checkpoints")]
    return cli_main(["eval", *argv])


if __name__ == "__main__":
    sys.exit(main())
