"""camfast: compiled kernels for class activation maps in PyTorch."""

from camfast import _ext, ops
from camfast._ext import NativeExtensionWarning

__version__ = "0.1.0"

__all__ = ["NativeExtensionWarning", "ops", "__version__"]
