"""Shared fixtures: devices, backends, dtypes, one tolerance table, and the native-build guard.

* Triton kernels run on CPU tensors under its interpreter: ``TRITON_INTERPRET=1`` is set
  here, before camfast (and triton) are imported, when no GPU is present.
* ``CAMFAST_REQUIRE_NATIVE=1`` (set by scripts/test.sh and so by CI): the session fails
  unless ``camfast._C`` is loaded and was built from the ``csrc/`` beside these tests; the
  loaded module's path and fingerprint are written to ``build/tested-extension.json``.
* ``CAMFAST_TEST_DEVICE=cpu|cuda`` restricts the device fixture.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

# A fresh Inductor cache for each session: compiled graphs cached by an earlier session keep
# the layouts of the custom ops' fake kernels of that time (a fake kernel fixed since then
# would still fail its stride assertion). Set before torch compiles anything.
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    import atexit
    import shutil

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="camfast-inductor-")
    atexit.register(shutil.rmtree, os.environ["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)

import pytest  # noqa: E402
import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    # Import triton now, under the interpreter: triton.language's own @jit helpers (the
    # combine functions of tl.sum, ...) are bound to the mode in force at its first import,
    # and torch may import triton later from a test that has switched the variable off.
    try:
        import triton  # noqa: F401
    except ImportError:
        pass

import camfast  # noqa: E402  (after TRITON_INTERPRET)
from camfast import _ext  # noqa: E402
from camfast.ops import _backend  # noqa: E402

from helpers import DTYPES, REQUIRE_NATIVE, require_backend  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def pytest_sessionstart(session):
    if not REQUIRE_NATIVE:
        return
    if _ext.native is None:
        raise pytest.UsageError(f"CAMFAST_REQUIRE_NATIVE=1 but camfast._C is not loaded: {_ext.native_error}")
    expected = _ext.source_hash(ROOT / "csrc")
    built = _ext.native.source_hash()
    if built != expected:
        raise pytest.UsageError(
            f"camfast._C ({_ext.native.__file__}) was built from other sources than {ROOT / 'csrc'}: "
            f"rebuild with `pip install --no-build-isolation -e .`"
        )
    report = ROOT / "build" / "tested-extension.json"
    report.parent.mkdir(exist_ok=True)
    tmp = report.with_suffix(".tmp")
    tmp.write_text(json.dumps({"path": _ext.native.__file__, "source_hash": built, "cuda": _ext.native.has_cuda()}))
    os.replace(tmp, report)


def pytest_report_header(config):
    if _ext.native is None:
        return f"camfast._C: NOT loaded ({_ext.native_error})"
    return (
        f"camfast._C: {_ext.native.__file__} (cuda kernels: {_ext.native.has_cuda()}, "
        f"openmp: {_ext.native.openmp()}, sources {_ext.native.source_hash()[:12]}); "
        f"TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '0')}"
    )


def _device_params():
    only = os.environ.get("CAMFAST_TEST_DEVICE")
    params = []
    for name in ("cpu", "cuda"):
        if only and only != name:
            continue
        marks = [pytest.mark.cuda] if name == "cuda" else []
        if name == "cuda" and not torch.cuda.is_available():
            marks.append(pytest.mark.skip(reason="no CUDA device"))
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.fixture(params=_device_params())
def device(request) -> torch.device:
    return torch.device(request.param)


@pytest.fixture(params=list(_backend.BACKENDS))
def backend(request, device) -> str:
    """Every backend on every device; runs the test inside ``use_backend(name)``."""
    name = request.param
    require_backend(name, device)
    with camfast.ops.use_backend(name):
        yield name


@pytest.fixture(params=DTYPES, ids=lambda d: str(d).replace("torch.", ""))
def dtype(request) -> torch.dtype:
    return request.param
