"""What every ``camfast`` subcommand shares: exit statuses, ``--method``, ``--device``, ``--model``,
class names for ``--target``/labels, and the errors that stop a run because of its output folder.

Methods come from :mod:`camfast.methods.registry` only (the CLI names none): a method
registered before the parser is built appears in ``--method`` of every command.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import errno
import os
import sys
from collections.abc import Sequence
from typing import Any

__all__ = [
    "DEFAULT_METHOD", "EXIT_FAILED_IMAGES", "EXIT_INTERRUPTED", "EXIT_NO_IMAGES", "EXIT_OK", "EXIT_OUTPUT", "EXIT_STATUS_HELP",
    "EXIT_USAGE", "FATAL_WRITE_ERRNOS", "OutputStopped", "UsageError", "available_methods", "describe_os_error",
    "load_model", "match_class_name", "method_names", "method_type", "methods_help", "resolve_device",
]

#: the method a command runs when none is given (one place; any registered name works)
DEFAULT_METHOD = "zoom-cam"

EXIT_OK = 0
#: no image was found in what was given (an empty folder, only non-images)
EXIT_NO_IMAGES = 1
#: bad arguments: argparse errors, an unknown model, class, device, a malformed labels file
EXIT_USAGE = 2
#: some images could not be read or their outputs not written (each reported; the others written)
EXIT_FAILED_IMAGES = 3
#: the output folder cannot be written (read-only, full, or in use by another run): the run stopped
EXIT_OUTPUT = 4
#: interrupted (Ctrl-C / SIGINT)
EXIT_INTERRUPTED = 130

EXIT_STATUS_HELP = f"""\
exit status:
  {EXIT_OK}    every image done
  {EXIT_NO_IMAGES}    no images found
  {EXIT_USAGE}    bad arguments (unknown method, model, class or device; malformed labels file)
  {EXIT_FAILED_IMAGES}    some images could not be read or written (each reported; the others are written)
  {EXIT_OUTPUT}    the output folder cannot be written (read-only, full, or in use by another run): stopped
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C); finished files are kept, no partial ones"""

#: errors of a write that stop the whole run (every later write would fail the same way)
FATAL_WRITE_ERRNOS = frozenset({errno.EROFS, errno.ENOSPC, errno.EDQUOT})


class UsageError(ValueError):
    """A run could not start: bad settings, labels file, model or image folder (the message
    names which). Errors during the run are not wrapped."""


class OutputStopped(OSError):
    """The output folder cannot be written any more (read-only, full, locked): the run stops."""


def describe_os_error(e: OSError, path: object | None = None) -> str:
    """``"PATH: reason"`` for an OSError (the path it names, else ``path``)."""
    where = e.filename if e.filename is not None else path
    reason = e.strerror or str(e)
    return f"{where}: {reason}" if where is not None else reason


# ------------------------------------------------------------------------------ methods
def method_names() -> list[str]:
    """Every registered method, in registry order (read at call time: later registrations count)."""
    from camfast.methods import registry

    return registry.names()


def available_methods() -> list[str]:
    """The registered methods whose optional modules are installed here."""
    from camfast.methods import registry

    return [s.name for s in registry.specs() if not s.missing()]


def method_type(text: str) -> str:
    """argparse ``type=``: any spelling of a registered method -> its canonical name."""
    from camfast.methods import registry

    try:
        return registry.get(text).name
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def methods_help() -> str:
    """Every registered method (with what it needs that is missing here), for ``--help``."""
    from camfast.methods import registry

    return ", ".join(f"{s.name}" + (f" (needs {', '.join(s.missing())})" if s.missing() else "")
                     for s in registry.specs())


# ------------------------------------------------------------------------------ device
def resolve_device(text: str | None):
    """``--device`` as a ``torch.device`` (None: cuda when available, else cpu).

    Raises:
        UsageError: not a device name, or CUDA asked for where there is none.
    """
    import torch

    if text is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(text)
    except (RuntimeError, TypeError, ValueError):
        raise UsageError(f"--device: {text!r} is not a device (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA device is visible"
            raise UsageError(f"--device {text}: CUDA is not available here ({why}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {text}: there are {torch.cuda.device_count()} CUDA device(s)")
    return dev


# ------------------------------------------------------------------------------ model
def load_model(text: str, device: Any):
    """:func:`camfast.models.load_model` as the commands document it: ``module:callable`` is
    looked up with the working directory on ``sys.path`` (as under ``python -m``, also under
    the installed ``camfast`` script), and errors name ``--model``.

    Raises:
        UsageError: the model cannot be loaded (message starts with ``--model``).
    """
    from camfast import models

    added = False
    cwd = os.getcwd()
    if ":" in text and not os.path.exists(text) and cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
        added = True
    try:
        return models.load_model(text, device)
    except (ImportError, ValueError, TypeError, FileNotFoundError) as e:
        msg = str(e)
        for jargon in ("spec: ", "spec "):
            if msg.startswith(jargon):
                msg = msg[len(jargon):]
        raise UsageError(f"--model {text}: {msg}") from e
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(cwd)


# ------------------------------------------------------------------------------ class names
def match_class_name(text: str, class_names: Sequence[str], what: str) -> int:
    """The index of the class called ``text``: exact, then ignoring case, then a unique
    case-insensitive substring. Raises ValueError naming ``what`` with close names suggested."""
    if text in class_names:
        return list(class_names).index(text)
    lowered = [n.lower() for n in class_names]
    key = text.strip().lower()
    hits = [i for i, n in enumerate(lowered) if n == key]
    if not hits:
        hits = [i for i, n in enumerate(lowered) if key and key in n]
    if len(hits) == 1:
        return hits[0]
    if hits:
        shown = ", ".join(f"{i} ({class_names[i]})" for i in hits[:8])
        raise ValueError(f"{what}: {text!r} matches several classes: {shown}; give an index")
    close = difflib.get_close_matches(key, lowered, n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(class_names[lowered.index(c)]) for c in close)}?" if close else ""
    raise ValueError(f"{what}: unknown class name {text!r}{hint}")
