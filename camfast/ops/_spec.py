"""The codes every backend of an op shares (device, dtype and option names and their kernel
codes, and the ops' fixed constants), read from ``codes.json`` beside this file.

``codes.json`` is the one definition: CMake generates the C++ enums, range checks and
constants of ``camfast._C`` from it (``csrc/codes.cmake``), and ``camfast._ext`` refuses a
``_C`` built from another table (``mismatch``). A value's code is its position in the
table, so adding an option (a ``grad_weighted_map`` mode, say) is one appended row plus its
kernel code; nothing here or in C++ is edited by hand. Pure standard library: importable
without torch or ``camfast._C``.
"""

from __future__ import annotations

import json
from pathlib import Path

#: The table's file; part of ``camfast._C``'s source fingerprint (``camfast._ext.source_hash``).
TABLE_PATH = Path(__file__).with_name("codes.json")


def _load(path: Path) -> tuple[dict[str, dict[str, int]], dict[str, int | float]]:
    raw = json.loads(path.read_text(encoding="utf-8"))
    enums: dict[str, dict[str, int]] = {}
    for enum in raw["enums"]:
        names = [value[0] for value in enum["values"]]
        if len(set(names)) != len(names) or enum["name"] in enums:
            raise ValueError(f"{path}: enum {enum['name']!r} repeats a name: {names}")
        enums[enum["name"]] = {name: code for code, name in enumerate(names)}
    constants = {c["name"]: c["value"] for c in raw["constants"]}
    return enums, constants


#: ``{enum name: {value name: code}}``, e.g. ``ENUMS["GwmMode"]["gradcam"] == 1``.
ENUMS, CONSTANTS = _load(TABLE_PATH)

#: Where a kernel runs (``camfast.ops.native._launch.device_args``).
DEVICES = ENUMS["Device"]
#: Element types, by ``torch.dtype`` name (``float32``, ...).
DTYPES = ENUMS["DType"]
#: ``camfast::grad_weighted_map`` modes.
GWM_MODES = ENUMS["GwmMode"]
#: ``camfast::upsample_aggregate`` reductions and normalisations.
UA_REDUCES = ENUMS["UaReduce"]
UA_NORMALIZES = ENUMS["UaNormalize"]
#: Epsilon of the min-max normalisation ``(M - min) / (max - min + UA_EPS)``; fixed.
UA_EPS: float = CONSTANTS["UA_EPS"]
#: Most layers one call takes: the CUDA kernels receive the layer table as a kernel
#: argument (4 KiB limit), and Triton specialises on the number of layers.
UA_MAX_LAYERS: int = CONSTANTS["UA_MAX_LAYERS"]
#: ``camfast::guided_filter`` borders.
GF_BORDERS = ENUMS["BoxBorder"]


def table() -> dict:
    """The table in the form ``camfast._C.codes()`` reports the one it was built with:
    ``{"enums": {name: [value names in code order]}, "constants": {name: value}}``."""
    return {"enums": {name: list(values) for name, values in ENUMS.items()}, "constants": dict(CONSTANTS)}


def mismatch(compiled: dict) -> str | None:
    """How a compiled table (``camfast._C.codes()``) differs from ``codes.json``, or None."""
    expected = table()
    diffs = []
    for section in ("enums", "constants"):
        want, got = expected[section], compiled.get(section, {})
        for name in sorted(set(want) | set(got)):
            if want.get(name) != got.get(name):
                diffs.append(f"{name}: built with {got.get(name)!r}, codes.json has {want.get(name)!r}")
    return "; ".join(diffs) or None
