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
import os
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
        status = int(importlib.import_module(args._module).run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        status = 130
    return _leave(status)


def _leave(status: int) -> int:
    """``status``; a rank of the ``camfast`` command under torchrun ends here, at once.

    Its work is done: every file is renamed into place, the summary written, the folder lock
    released, the process group destroyed. What is left is interpreter teardown, and there a
    Gloo backend's worker threads can still be releasing the tensors of their last work and
    abort the process (SIGABRT, "terminate called without an active exception"; seen once on
    the 2-core CI machine, where torchrun then reports the rank's -6 instead of its status).
    So the rank flushes its output and exits with its status, skipping the teardown. Only the
    command's own process does this: ``main()`` called from a program returns."""
    from camfast import _command_env

    world = os.environ.get("WORLD_SIZE", "").strip()
    if world.isdigit() and int(world) > 1 and _command_env.is_camfast_command():
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe: nothing more can be said
                pass
        os._exit(status)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
