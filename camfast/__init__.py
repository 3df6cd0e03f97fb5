"""camfast: compiled kernels for class activation maps in PyTorch.

The package has three layers, each importing only the ones below it:

* **core**: :mod:`camfast.ops` (the kernels: custom ops with native, Triton and reference
  backends), :mod:`camfast.methods` (the CAM methods, their registry and engine),
  :mod:`camfast.nn` (TAP), :mod:`camfast.localization`, :mod:`camfast.crf`,
  :mod:`camfast.puzzle` (training-time pieces), :mod:`camfast.models` (the bundled
  pretrained model), :mod:`camfast.compat` (the pytorch-grad-cam drop-in);
* **evaluation**: :mod:`camfast.evaluation` (metrics, datasets, the WSOL table);
* **applications**: :mod:`camfast.cli` (the ``camfast`` command: explain, pseudo-label, eval).

``import camfast`` loads only :mod:`camfast.ops` (so ``torch.ops.camfast.*`` exist); every
other name loads on first use (PEP 562). Methods (one call per batch): :func:`zoom_cam`,
:func:`grad_cam`, :func:`layer_cam`, :func:`cam`, :func:`rcam`, ... (every method in
:mod:`camfast.methods.registry`); :func:`find_layers`, :func:`normalize`,
:func:`boxes_from_cam`, :func:`multiscale_cam`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any

from camfast import _command_env

_command_env.apply()  # before torch loads: the `camfast` command's OpenMP wait policy

from camfast import ops  # noqa: E402
from camfast._ext import NativeExtensionWarning  # noqa: E402

__version__ = "0.1.0"

# Public attribute -> the module that defines it (loaded on first access).
_LAZY_ATTRS = {
    "CAMResult": "camfast.methods", "RCAMResult": "camfast.methods", "find_layers": "camfast.methods",
    "pca_guide": "camfast.methods", "variogram_radius": "camfast.methods",
    "boxes_from_cam": "camfast.localization", "normalize": "camfast.localization",
    "multiscale_cam": "camfast.puzzle", "multiscale": "camfast.methods.multiscale",
    "MultiScaleResult": "camfast.methods.multiscale",
    "BoxScoreTarget": "camfast.methods.detection", "MaskTarget": "camfast.methods.targets",
}
# Submodules reachable as attributes (``camfast.metrics``) and their homes.
_LAZY_MODULES = {
    "methods": "camfast.methods", "nn": "camfast.nn", "localization": "camfast.localization",
    "crf": "camfast.crf", "puzzle": "camfast.puzzle", "models": "camfast.models", "compat": "camfast.compat",
    "evaluation": "camfast.evaluation", "metrics": "camfast.evaluation.metrics",
    "datasets": "camfast.evaluation.datasets", "wsol": "camfast.evaluation.wsol", "cli": "camfast.cli",
    "pseudolabel": "camfast.cli.pseudo_label", "layers": "camfast.methods.layers",
    "utils": "camfast.utils", "train": "camfast.evaluation.train",
}
# Modules that moved when the package was layered: the old import paths keep working.
_MOVED = {f"camfast.{old}": new for old, new in _LAZY_MODULES.items() if new != f"camfast.{old}"}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import camfast.metrics`` (and its submodules) gives ``camfast.evaluation.metrics``."""

    def find_spec(self, fullname, path=None, target=None):
        try:
            return importlib.util.spec_from_loader(fullname, self, origin=self._target(fullname))
        except ImportError:
            return None

    def create_module(self, spec):
        module = importlib.import_module(spec.origin)
        sys.modules[spec.name] = module
        return module

    def exec_module(self, module) -> None:
        pass

    def get_code(self, fullname):  # ``python -m camfast.train`` (runpy) runs the module's new home
        target = importlib.util.find_spec(self._target(fullname))
        return target.loader.get_code(target.name)

    def is_package(self, fullname) -> bool:
        return importlib.util.find_spec(self._target(fullname)).submodule_search_locations is not None

    @staticmethod
    def _target(fullname: str) -> str:
        for old, new in _MOVED.items():
            if fullname == old or fullname.startswith(old + "."):
                return new + fullname[len(old):]
        raise ImportError(fullname)


if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _MovedModuleFinder())


def __getattr__(name: str) -> Any:
    if name == "__all__":  # computed, so that every registered method is in it
        return ["NativeExtensionWarning", "ops", "__version__", *_LAZY_ATTRS, *_LAZY_MODULES, *_method_functions()]
    if name in _LAZY_MODULES:
        module = importlib.import_module(_LAZY_MODULES[name])
        globals()[name] = module
        return module
    if name in _LAZY_ATTRS:
        value = getattr(importlib.import_module(_LAZY_ATTRS[name]), name)
        globals()[name] = value
        return value
    if not name.startswith("_"):
        from camfast.methods import registry

        for spec in registry.specs():
            if spec.base is None and spec.function.__name__ == name:
                globals()[name] = spec.function
                return spec.function
    raise AttributeError(f"module 'camfast' has no attribute {name!r}")


def _method_functions() -> list[str]:
    from camfast.methods import registry

    return [s.function.__name__ for s in registry.specs() if s.base is None]


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_ATTRS) | set(_LAZY_MODULES) | set(_method_functions()))
