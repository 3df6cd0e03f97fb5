"""The kernel code table: the integer codes of devices, dtypes and op options, and the ops'
fixed constants, read from ``codes.json`` beside this file.

``codes.json`` is the one definition. CMake generates the C++ enums, range checks and
constants of ``camfast._C`` from it (``csrc/codes.cmake``); Python reads it here, at import,
so the reference and Triton backends have the codes without ``camfast._C``
(``camfast.ops._spec`` names the ones the ops use); and ``camfast._ext`` refuses a
``camfast._C`` whose compiled table (``camfast._C.codes()``) differs (``mismatch``). A
value's code is its position in its list, so adding an option (a ``grad_weighted_map``
mode, say) is one appended row plus its kernel code. Standard library only.

Example:
    >>> from camfast.ops import codes
    >>> codes.ENUMS["GwmMode"]
    {'zoom': 0, 'gradcam': 1, 'layercam': 2, 'gradcampp': 3, 'xgradcam': 4}
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["CONSTANTS", "ENUMS", "TABLE_PATH", "mismatch", "table"]

#: The table's file; part of ``camfast._C``'s source fingerprint (``camfast._ext.source_hash``).
TABLE_PATH = Path(__file__).with_name("codes.json")


def _load(path: Path) -> tuple[dict[str, dict[str, int]], dict[str, int | float]]:
    raw = json.loads(path.read_text(encoding="utf-8"))
    enums: dict[str, dict[str, int]] = {}
    for enum in raw["enums"]:
        names = [value[0] for value in enum["values"]]
        if len(set(names)) != len(names) or enum["name"] in enums:
            raise ValueError(f"{path}: enum {enum['name']!r} is defined twice or repeats a name: {names}")
        enums[enum["name"]] = {name: code for code, name in enumerate(names)}
    return enums, {c["name"]: c["value"] for c in raw["constants"]}


#: ``{enum name: {value name: code}}``, e.g. ``ENUMS["GwmMode"]["gradcam"] == 1``; and
#: ``{constant name: value}``, e.g. ``CONSTANTS["UA_MAX_LAYERS"] == 64``.
ENUMS, CONSTANTS = _load(TABLE_PATH)


def table() -> dict:
    """The table in the form ``camfast._C.codes()`` reports the one it was built with:
    ``{"enums": {name: [value names in code order]}, "constants": {name: value}}``."""
    return {"enums": {name: list(values) for name, values in ENUMS.items()}, "constants": dict(CONSTANTS)}


def mismatch(compiled: dict) -> str | None:
    """How a compiled table (``camfast._C.codes()``) differs from ``codes.json``, or None.

    Example:
        >>> stale = table(); stale["enums"]["GwmMode"] = ["zoom", "gradcam"]
        >>> mismatch(stale)
        "GwmMode: built with ['zoom', 'gradcam'], codes.json has ['zoom', 'gradcam', 'layercam', 'gradcampp', 'xgradcam']"
    """
    expected = table()
    diffs = []
    for section in ("enums", "constants"):
        want, got = expected[section], compiled.get(section, {})
        for name in sorted(set(want) | set(got)):
            if want.get(name) != got.get(name):
                diffs.append(f"{name}: built with {got.get(name)!r}, codes.json has {want.get(name)!r}")
    return "; ".join(diffs) or None
