"""The ``camfast`` command line.

``camfast explain``      explain images (bundled samples by default) with a pretrained model;
``camfast pseudo-label`` write CAM heatmaps / label maps for a folder of images (torchrun-ready);
``camfast eval``         the WSOL benchmark table (synthetic data here, or a real dataset).

Each subcommand lives in its own module exposing ``add_parser(subparsers)`` and
``run(args) -> int``; modules are imported only when their subcommand runs, so
``camfast --help`` stays fast and one subcommand's optional dependency never breaks another.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "explain": ("camfast.cli.explain", "explain images with a pretrained classifier and write overlays"),
    "pseudo-label": ("camfast.cli.pseudo_label", "write CAM heatmaps and label maps for a folder of images"),
    "eval": ("camfast.cli.evaluate", "score CAM methods on a WSOL benchmark and write the table"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="camfast", description="Class activation maps, fast.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(_module=module)
        # Each module adds its own arguments; a module that fails to import (a missing
        # optional dependency) is reported only when its subcommand is used.
        try:
            importlib.import_module(module).add_parser(p)
        except ImportError as e:  # pragma: no cover - depends on the environment
            p.set_defaults(_import_error=e)
    return parser


def _version() -> str:
    from camfast import __version__
    return f"camfast {__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # A subcommand whose module failed to import has no arguments: report the import error,
    # not argparse's "unrecognized arguments".
    known, _ = parser.parse_known_args(argv)
    err = getattr(known, "_import_error", None)
    if err is not None:
        print(f"camfast {known.command}: {err}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
