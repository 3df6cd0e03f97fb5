"""Evaluation (above the core): WSOL/WSSS metrics (:mod:`camfast.evaluation.metrics`),
dataset readers (:mod:`camfast.evaluation.datasets`) and the WSOL benchmark table
(:mod:`camfast.evaluation.wsol`). Submodules load on first use."""

import importlib

_SUBMODULES = ("datasets", "metrics", "provenance", "train", "wsol")


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"camfast.evaluation.{name}")
    raise AttributeError(f"module 'camfast.evaluation' has no attribute {name!r}")
