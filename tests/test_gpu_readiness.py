"""GPU readiness (issue 14): what can be checked without a GPU, and the checks that need one.

Without a GPU the routing is tested by faking the device's properties and the build
(``fake_gpu``), the launchers' grids by running them on ``meta`` tensors with the kernels
replaced by recorders (nothing allocated, any shape), the int64 offsets by running the
kernels under the interpreter on sparse memory-mapped files (gigabytes of address space,
a few pages touched), and the deterministic backward and the device guard under the
interpreter. The ``cuda`` tests at the end run on a GPU (``scripts/gpu-check.sh``).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import pytest
import torch
from helpers import assert_close

import camfast
from camfast import _ext
from camfast.ops import _backend, _dispatch, use_backend
from camfast.ops.reference import upsample_aggregate as ref_ua

ROOT = Path(__file__).resolve().parents[1]
TRITON_OPS = ("box_filter", "grad_weighted_map", "guided_filter", "neighbour_stencil", "thresholded_avg_pool2d",
              "upsample_aggregate")
CUDA = torch.device("cuda")
#: Where the Triton kernels run in this session: the GPU when there is one, else the
#: interpreter on CPU tensors (tests/conftest.py sets TRITON_INTERPRET=1 then).
DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _triton_module(op: str):
    if "triton" not in camfast.ops.available_backends(DEV):
        pytest.skip("triton not available")
    return importlib.import_module(f"camfast.ops.triton.{op}")


# ============================================================== routing (faked GPU and build)


class _FakeNative:
    """``camfast._C`` as a CUDA build for ``archs`` would present itself."""

    def __init__(self, archs: str) -> None:
        self._archs = archs

    def has_cuda(self) -> bool:
        return True

    def built_with_cuda(self) -> bool:
        return True

    def cuda_status(self) -> None:  # the runtime probe found a device
        return None

    def cuda_archs(self) -> str:
        return self._archs

    def __getattr__(self, name):
        return getattr(_ext.native, name)


@pytest.fixture
def fake_gpu(monkeypatch):
    """``install(capability, archs, triton=...)``: a GPU of that compute capability, a CUDA
    build of ``camfast._C`` for ``archs``, Triton installed at version ``triton`` (None: absent)."""
    monkeypatch.delenv("CAMFAST_BACKEND", raising=False)
    monkeypatch.setattr(_backend, "_warned", set())

    def install(capability=(9, 0), archs="80,90", triton="3.6.0"):
        monkeypatch.setattr(_ext, "native", _FakeNative(archs))
        # its runtime probe answers for the fake (the real one is cached for the real build)
        monkeypatch.setattr(_ext, "native_cuda_problem", lambda: None)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
        monkeypatch.setattr(_backend, "_triton_installed", lambda: triton is not None)
        monkeypatch.setattr(_backend, "_triton_version", lambda: triton)

    return install


@contextlib.contextmanager
def deterministic(warn_only: bool = False):
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(True, warn_only=warn_only)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


@pytest.mark.parametrize("capability,archs,runs", [
    ((9, 0), "80,90", True),             # H100: sm_90 machine code
    ((8, 6), "80,90", True),             # A10/RTX 30: sm_80 machine code runs on 8.6
    ((12, 0), "80,90", True),            # a newer GPU: the compute_90 PTX is compiled by the driver
    ((7, 5), "80,90", False),            # T4: older than every entry
    ((7, 0), "80,90", False),            # V100
    ((12, 0), "80-real,90-real", False),  # machine code only: no PTX for newer GPUs
    ((8, 9), "86-real", True),
    ((8, 0), "86-real", False),
    ((9, 0), "90a-real", True),          # architecture-specific: exactly 9.0
    ((10, 0), "90a", False),
    ((10, 3), "100f", True),             # family: 10.x from 10.0
    ((12, 0), "100f", False),
    ((7, 5), "75-real,80-real,90-real,100-real,110-real,120", True),  # CMake's all-major, resolved
    ((7, 5), "something-new", True),     # unreadable: nothing is assumed against the build
])
def test_cuda_archs_run_on(capability, archs, runs):
    assert _backend.cuda_archs_run_on(archs, capability) is runs


@pytest.mark.parametrize("capability,expected", [((9, 0), "native"), ((8, 6), "native"), ((7, 5), "triton")])
def test_native_on_cuda_only_for_built_architectures(fake_gpu, capability, expected):
    fake_gpu(capability=capability, archs="80,90")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for op in ("box_filter", "grad_weighted_map", "neighbour_stencil", "thresholded_avg_pool2d",
                   "upsample_aggregate"):
            assert _backend.resolve(CUDA, op) == expected
    fallbacks = [w for w in caught if issubclass(w.category, _backend.BackendFallbackWarning)]
    if expected == "native":
        assert not fallbacks
    else:  # warned once, naming the build's and the GPU's architectures
        assert len(fallbacks) == 1
        assert "80;90" in str(fallbacks[0].message) and "7.5" in str(fallbacks[0].message)


def test_unsupported_gpu_without_triton_runs_the_reference(fake_gpu):
    fake_gpu(capability=(7, 0), archs="80,90", triton=None)
    with pytest.warns(_backend.BackendFallbackWarning, match="compute capability 7.0"):
        assert _backend.resolve(CUDA, "grad_weighted_map") == "reference"
    assert _backend.available_backends(CUDA) == ["reference"]


def test_requested_native_on_unsupported_gpu_is_an_error(fake_gpu):
    fake_gpu(capability=(7, 5), archs="80,90")
    with use_backend("native"):
        with pytest.raises(RuntimeError, match="CMAKE_CUDA_ARCHITECTURES=80;90.*compute capability 7.5"):
            _backend.resolve(CUDA, "box_filter")


def test_guided_filter_on_cuda_routes_to_triton(fake_gpu):
    """Its native backend has no CUDA kernel (it would run the reference's formulas)."""
    fake_gpu(capability=(9, 0))
    assert _backend.resolve(CUDA, "guided_filter") == "triton"
    assert _backend.resolve(CUDA, "box_filter") == "native"
    fake_gpu(capability=(9, 0), triton=None)
    assert _backend.resolve(CUDA, "guided_filter") == "reference"
    assert "native" in _backend.available_backends(CUDA)  # still there when asked for by name


def test_cpu_routing_is_unchanged():
    cpu = torch.device("cpu")
    expected = "native" if _ext.native is not None else "reference"
    for op in TRITON_OPS:
        assert _backend.resolve(cpu, op) == expected
    assert _backend.preference("guided_filter", cpu) == ("native", "reference")


@pytest.mark.filterwarnings("ignore::camfast.ops._backend.BackendFallbackWarning")  # native skipped on 7.5
@pytest.mark.parametrize("version,ok", [("3.1.0", False), ("3.0.0", False), ("2.3.1", False), ("3.2.0", True),
                                        ("3.6.0", True), ("3.2.0+git35c6c7c6", True), ("3.10.1", True)])
def test_triton_version_requirement(fake_gpu, version, ok):
    fake_gpu(capability=(7, 5), triton=version)  # native cannot run: triton is next
    reason = _backend.unavailable_reason("triton", CUDA)
    assert (reason is None) is ok
    if ok:
        assert _backend.resolve(CUDA, "box_filter") == "triton"
        return
    assert f"triton {version} is older than 3.2" in reason
    with pytest.warns(_backend.BackendFallbackWarning, match=f"triton {version} is older"):
        assert _backend.resolve(CUDA, "guided_filter") == "reference"
    with use_backend("triton"), pytest.raises(RuntimeError, match="older than 3.2"):
        _backend.resolve(CUDA, "box_filter")


def test_pyproject_requires_the_triton_the_code_checks():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["triton"] == ["triton>=" + ".".join(map(str, _backend.MIN_TRITON))]


def test_version_parsing():
    assert _backend._version_tuple("3.2.0+git35c6c7c6") == (3, 2, 0)
    assert _backend._version_tuple("3.10") == (3, 10)
    assert _backend._version_tuple("nightly") == ()
    assert _backend._triton_version() is None or _backend._version_tuple(_backend._triton_version())


def test_build_reports_its_cuda_architectures():
    if _ext.native is None:
        pytest.skip("camfast._C not built")
    archs = _ext.native.cuda_archs()
    assert isinstance(archs, str)
    if _ext.native.built_with_cuda():
        assert _backend.parse_cuda_archs(archs), archs
    else:
        assert archs == ""


# ============================================================== determinism


def test_deterministic_mode_routes_upsample_aggregate_to_triton(fake_gpu):
    fake_gpu(capability=(9, 0))
    assert _backend.resolve(CUDA, "upsample_aggregate") == "native"
    with deterministic():
        assert _backend.resolve(CUDA, "upsample_aggregate") == "triton"
        assert _backend.resolve(CUDA, "grad_weighted_map") == "native"  # deterministic natively


def test_nondeterministic_backward_is_refused_with_a_clear_error(fake_gpu, monkeypatch):
    fake_gpu(capability=(9, 0), triton=None)  # no deterministic backend to route to
    from camfast.ops.native import upsample_aggregate as native_ua

    monkeypatch.setattr(native_ua, "backward", lambda *args: "ran")
    assert _dispatch.implementation("upsample_aggregate", CUDA) is native_ua  # not deterministic mode
    with deterministic():
        impl = _dispatch.implementation("upsample_aggregate", CUDA)
        assert impl.forward is native_ua.forward  # inference is never refused
        with pytest.raises(RuntimeError, match=r"not deterministic.*atomicAdd.*triton>=3\.2"):
            impl.backward()
    with deterministic(warn_only=True):
        with pytest.warns(UserWarning, match="not deterministic"):
            assert _dispatch.implementation("upsample_aggregate", CUDA).backward() == "ran"
    with use_backend("reference"), deterministic():
        with pytest.raises(RuntimeError, match="upsample_bilinear2d_backward"):
            _dispatch.implementation("upsample_aggregate", CUDA).backward()


def _ua_cases(dtype):
    """(batch, layer sizes, output size): up, mixed, same size, to one pixel; in float64 also
    strong down- and upsampling, where float32 interpolation weights alone are off by more
    than the float32 tolerance (on every backend and in torch: ``src = scale * (x + 0.5)``
    loses the fraction's low bits as ``src`` grows), so they say nothing about the kernel."""
    cases = [(2, [(7, 5), (14, 9), (3, 3)], (37, 29)), (1, [(1, 1), (4, 4), (1, 6)], (5, 3)),
             (3, [(6, 8)], (6, 8)), (2, [(5, 4), (3, 3)], (1, 1))]
    if dtype == torch.float64:
        cases += [(2, [(40, 33), (9, 61)], (37, 29)), (1, [(7, 7), (14, 14)], (224, 224)), (1, [(3, 61)], (17, 7))]
    return cases


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("reduce,normalize,weights", [("max", "minmax", None), ("mean", "none", None),
                                                       ("sum", "minmax", None), ("sum", "none", (0.5, -2.0, 3.0))])
def test_deterministic_backward_matches_the_reference(dtype, reduce, normalize, weights):
    tri = _triton_module("upsample_aggregate")
    gen = torch.Generator().manual_seed(3)
    for B, shapes, size in _ua_cases(dtype):
        maps = [torch.randn((B, *s), generator=gen, dtype=torch.float64).to(DEV, dtype) for s in shapes]
        w = None if weights is None else list(weights[:len(maps)])
        g = torch.randn((B, *size), generator=gen, dtype=torch.float64).to(DEV, dtype)
        # the reference in float64 on the same (rounded) inputs
        expected = ref_ua.backward(g.double(), [m.double() for m in maps], reduce, normalize, w)
        got = tri.backward(g, maps, reduce, normalize, w, deterministic=True)
        for i, (a, e) in enumerate(zip(got, (e.to(dtype) for e in expected))):
            assert_close(a, e, dtype, f"{shapes}->{size} {reduce}/{normalize} d/dmaps[{i}]")


def test_deterministic_mode_takes_the_gather_backward(monkeypatch):
    tri = _triton_module("upsample_aggregate")
    calls = []
    real = tri._gather_dn
    monkeypatch.setattr(tri, "_gather_dn", lambda *a, **k: calls.append(1) or real(*a, **k))
    gen = torch.Generator().manual_seed(0)
    maps = [torch.randn(2, 7, 7, generator=gen).to(DEV), torch.randn(2, 14, 14, generator=gen).to(DEV)]
    grad_out = torch.randn(2, 56, 56, generator=gen).to(DEV)

    def grads():
        leaves = [m.clone().requires_grad_(True) for m in maps]
        return torch.autograd.grad(camfast.ops.upsample_aggregate(leaves, (56, 56)), leaves, grad_out)

    with use_backend("triton"):
        grads()
        assert not calls  # the atomic scatter by default
        with deterministic():
            first, second = grads(), grads()
    assert len(calls) == 2
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    with use_backend("reference"):
        for a, e in zip(first, grads()):
            assert_close(a, e, torch.float32, "deterministic gradient")


# ============================================================== the device guard


def test_device_guard_selects_the_tensors_cuda_device(monkeypatch):
    _triton_module("box_filter")
    from torch._subclasses.fake_tensor import FakeTensorMode

    from camfast.ops.triton import _launch

    entered = []

    @contextlib.contextmanager
    def fake_cuda_device(device):
        entered.append(torch.device(device))
        yield

    monkeypatch.setattr(torch.cuda, "device", fake_cuda_device)

    inside = []

    @_launch.on_input_device
    def launcher(maps, n):
        inside.append(list(entered))  # the guards entered when the body runs
        return n

    with FakeTensorMode():
        x = torch.empty(2, 3, device="cuda:1")
        assert launcher([x, x], 5) == 5
    assert inside == [[torch.device("cuda", 1)]]
    entered.clear()
    assert launcher([torch.ones(1)], 1) == 1  # CPU (the interpreter): nothing to select
    assert entered == []
    with pytest.raises(TypeError, match="no tensor argument"):
        launcher([], 1)


def _run_op(op: str, device: torch.device | str) -> None:
    """The op forward and backward on small float64 inputs on ``device``."""
    gen = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.rand(*shape, generator=gen, dtype=torch.float64).to(device).requires_grad_(True)

    if op == "box_filter":
        out = camfast.ops.box_filter(r(1, 2, 5, 6), 1)
    elif op == "grad_weighted_map":
        out = camfast.ops.grad_weighted_map(r(1, 2, 5, 6), r(1, 2, 5, 6), "gradcam")
    elif op == "guided_filter":
        out = camfast.ops.guided_filter(r(1, 3, 5, 6), r(1, 2, 5, 6), 1, 0.1)
    elif op == "neighbour_stencil":
        out = camfast.ops.neighbour_stencil(r(1, 2, 5, 6), r(1, 2, 5, 6), r(1, 2, 5, 6), r(1, 2, 5, 6))
    elif op == "thresholded_avg_pool2d":
        out = camfast.ops.thresholded_avg_pool2d(r(1, 2, 5, 6))
    else:
        out = camfast.ops.upsample_aggregate([r(1, 3, 3), r(1, 5, 4)], (7, 6))
    out.sum().backward()


@pytest.mark.parametrize("op", TRITON_OPS)
def test_every_triton_launch_runs_under_the_guard(monkeypatch, op):
    """Every launcher of the op, forward and backward, enters ``device_guard`` for its input."""
    _triton_module(op)
    from camfast.ops.triton import _launch

    devices = []

    def recording_guard(device):
        devices.append(device)
        return contextlib.nullcontext()

    monkeypatch.setattr(_launch, "device_guard", recording_guard)
    module = importlib.import_module(f"camfast.ops.triton.{op}")
    for name in ("forward", "backward"):
        assert getattr(getattr(module, name), "on_input_device", False), f"{op}.{name} is not wrapped"
    with use_backend("triton"):
        _run_op(op, DEV)
    assert len(devices) >= 2 and {d.type for d in devices} == {DEV.type}


# ============================================================== launch parameters (meta tensors)


class _RecordingKernel:
    """A Triton kernel stand-in: records each launch's grid, runs nothing."""

    def __init__(self, name: str, grids: list) -> None:
        self.name, self.grids = name, grids

    def __getitem__(self, grid):
        self.grids.append((self.name, tuple(grid)))
        return lambda *args, **kwargs: None


@pytest.fixture
def recorded_grids(monkeypatch):
    """Every ``_*_kernel`` of camfast.ops.triton replaced by a recorder; the grids launched."""
    grids: list = []
    for op in TRITON_OPS:
        module = _triton_module(op)
        for name in dir(module):
            if name.startswith("_") and name.endswith("_kernel"):
                monkeypatch.setattr(module, name, _RecordingKernel(f"{op}.{name}", grids))
    return grids


def _assert_within_cuda_limits(grids):
    from camfast.ops.triton import _launch

    assert grids
    for name, grid in grids:
        assert 1 <= grid[0] <= _launch.MAX_GRID_X, (name, grid)
        assert all(g <= _launch.MAX_GRID_YZ for g in grid[1:]), (name, grid)


def test_huge_batches_fit_the_grid(recorded_grids):
    """Batches past 65535 (the old axis-1 layout failed there) and large planes, launched on
    meta tensors (no memory) with every kernel recorded instead of run."""
    meta = torch.device("meta")
    tri = {op: _triton_module(op) for op in TRITON_OPS}
    B = 70_000
    a = torch.empty(B, 64, 56, 56, device=meta)
    out = tri["grad_weighted_map"].forward(a, a, "zoom")
    tri["grad_weighted_map"].backward(out, a, a, out, "layercam")
    tri["grad_weighted_map"].forward(a, a, "gradcam")
    maps = [torch.empty(B, 7, 7, device=meta), torch.empty(B, 28, 28, device=meta)]
    out = tri["upsample_aggregate"].forward(maps, (224, 224), "max", "minmax", None)
    for det in (False, True):
        tri["upsample_aggregate"].backward(out, maps, "max", "minmax", None, deterministic=det)
    x = torch.empty(B, 2048, 7, 7, device=meta)
    pooled, tau, count = tri["thresholded_avg_pool2d"].forward(x, 0.1)
    tri["thresholded_avg_pool2d"].backward(pooled, x, tau, count)
    plane = torch.empty(1, 1, 9000, 9000, device=meta)  # 81M pixels: past 65535 blocks of 1024
    tri["thresholded_avg_pool2d"].backward(torch.empty(1, 1, device=meta), plane, tau[:1, :1], count[:1, :1])
    img = torch.empty(B, 3, 64, 64, device=meta)
    tri["box_filter"].forward(img, 3)
    tri["guided_filter"].forward(img, img, 3, 0.1, 1, "truncate")
    tri["neighbour_stencil"].forward(img, img, img, img)
    tri["neighbour_stencil"].backward(img, img, img, img)
    tri["neighbour_stencil"].forward(plane, plane, plane, plane)
    _assert_within_cuda_limits(recorded_grids)
    names = {name for name, _ in recorded_grids}
    assert {"grad_weighted_map._gwm_fwd_kernel", "upsample_aggregate._ua_bwd_scatter_kernel",
            "upsample_aggregate._ua_bwd_cols_kernel", "thresholded_avg_pool2d._tap_bwd_kernel",
            "guided_filter._coef_kernel", "box_filter._cols_kernel", "neighbour_stencil._stencil_kernel"} <= names


def test_grid_helpers():
    _triton_module("box_filter")
    from camfast.ops.triton import _launch

    assert _launch.batch_blocks_grid(70_000, 49, 64) == (70_000,)
    assert _launch.batch_blocks_grid(3, 1025, 1024) == (6,)
    assert _launch.flat_grid(10, 4) == (3,)
    with pytest.raises(ValueError, match="grid limit"):
        _launch.batch_blocks_grid(2**16, 2**20, 16)


@pytest.mark.parametrize("op", ["grad_weighted_map", "upsample_aggregate"])
def test_batch_folded_into_axis_0_with_many_blocks_per_sample(monkeypatch, op):
    """Small blocks: several per sample and several samples, on the folded grid."""
    tri = _triton_module(op)
    monkeypatch.setattr(tri, "_block", lambda *args: 16)
    gen = torch.Generator().manual_seed(1)
    with use_backend("triton"):
        if op == "grad_weighted_map":
            a, g = torch.randn(3, 4, 7, 9, generator=gen).to(DEV), torch.randn(3, 4, 7, 9, generator=gen).to(DEV)
            for mode in ("zoom", "gradcam", "layercam"):
                out = camfast.ops.grad_weighted_map(a, g, mode)
                with use_backend("reference"):
                    assert_close(out, camfast.ops.grad_weighted_map(a, g, mode), torch.float32, mode)
        else:
            maps = [torch.randn(3, 4, 5, generator=gen, dtype=torch.float64).to(DEV),
                    torch.randn(3, 9, 3, generator=gen, dtype=torch.float64).to(DEV)]
            grad_out = torch.randn(3, 11, 13, generator=gen, dtype=torch.float64).to(DEV)
            for det in (False, True):
                got = tri.backward(grad_out, maps, "max", "minmax", None, deterministic=det)
                for a, e in zip(got, ref_ua.backward(grad_out, maps, "max", "minmax", None)):
                    assert_close(a, e, torch.float64, f"deterministic={det}")
            assert_close(tri.forward(maps, (11, 13), "mean", "none", None),
                         ref_ua.forward(maps, (11, 13), "mean", "none", None), torch.float64, "forward")


def test_tap_backward_with_several_blocks_per_plane():
    _triton_module("thresholded_avg_pool2d")
    x = torch.randn(2, 3, 40, 41, generator=torch.Generator().manual_seed(2)).to(DEV).requires_grad_(True)  # 2 blocks
    grads = []
    for backend in ("triton", "reference"):
        with use_backend(backend):
            (g,) = torch.autograd.grad(camfast.ops.thresholded_avg_pool2d(x, 0.3).sum(), x)
        grads.append(g)
    assert_close(grads[0], grads[1], torch.float32, "tap dx")


# ============================================================== theta built on the device


def test_tap_forward_makes_theta_on_the_device(recorded_grids):
    """No host-to-device copy in the Triton TAP forward launcher (``torch.tensor([theta],
    device=...)`` lifts a host value: a copy on CUDA, illegal in graph capture); ``torch.full``
    fills on the device. The launcher runs on meta tensors, its kernel recorded, not run
    (the interpreter's own copies are not the launcher's)."""
    tri = _triton_module("thresholded_avg_pool2d")
    from torch.utils._python_dispatch import TorchDispatchMode

    class Recorder(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    with Recorder() as rec:
        tri.forward(torch.empty(2, 3, 4, 4, dtype=torch.float64, device="meta"), 0.1)
    assert recorded_grids and "aten.full.default" in rec.ops
    copies = {"lift", "lift_fresh", "_to_copy", "copy_", "_copy_from"}
    assert not [op for op in rec.ops if op.split(".")[1] in copies], rec.ops


def test_tap_theta_keeps_float64():
    _triton_module("thresholded_avg_pool2d")
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64).to(DEV)
    with use_backend("triton"):
        tau = torch.ops.camfast.thresholded_avg_pool2d(x, 0.1)[1]
    assert torch.equal(tau, 0.1 * x.amax(dim=(2, 3)))


# ============================================================== int64 offsets (sparse files)

_INT64_SCRIPT = r"""
import sys, torch
import triton.language as tl
from camfast.ops.reference import grad_weighted_map as ref
from camfast.ops.triton import grad_weighted_map as gwm, guided_filter as gf

tmp = sys.argv[1]
S = 2**30 + 1  # c * S and h * S pass 2^31 for c, h = 2: int32 offsets wrap (and fault)

def sparse(name, n, dtype=torch.float32):
    return torch.from_file(f"{tmp}/{name}", shared=True, size=n, dtype=dtype)

def close(a, b, what):
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=what)

gen = torch.Generator().manual_seed(0)
# grad_weighted_map: a channel stride of S (zoom, layercam), a row stride of S (gradcam)
base = sparse("a", 2 * S + 2)
a = base.as_strided((1, 3, 1, 2), (3 * S, S, 2, 1))
a.copy_(torch.randn(1, 3, 1, 2, generator=gen))
g = torch.randn(1, 3, 1, 2, generator=gen)
for mode in ("zoom", "layercam"):
    out = gwm.forward(a, g, mode)
    close(out, ref.forward(a, g, mode), mode)
    dout = torch.randn(out.shape, generator=gen)
    for x, e, what in zip(gwm.backward(dout, a, g, out, mode), ref.backward(dout, a, g, out, mode), "ag"):
        close(x, e, f"{mode} d{what}")
base = sparse("g", 2 * S + 2)
gh = base.as_strided((1, 1, 3, 1), (3 * S, 3 * S, S, 1))
gh.copy_(torch.randn(1, 1, 3, 1, generator=gen))
ah = torch.randn(1, 1, 3, 1, generator=gen)
out = gwm.forward(ah, gh, "gradcam")
close(out, ref.forward(ah, gh, "gradcam"), "gradcam")
dout = torch.ones(out.shape)
for x, e, what in zip(gwm.backward(dout, ah, gh, out, "gradcam"), ref.backward(dout, ah, gh, out, "gradcam"), "ag"):
    close(x, e, f"gradcam d{what}")

# guided filter: its three per-pixel kernels on 4 pixels of a sample with a plane of HW
# pixels, against the same kernels on a plane of 4 pixels (the box means left out)
G, C, W = 3, 2, 4
K = G + G * (G + 1) // 2 + C + G * C
guide = torch.rand(1, G, 1, W, generator=gen)
src = torch.rand(1, C, 1, W, generator=gen)
eps = torch.full((1,), 0.1, dtype=torch.float64)
shift = gf.guide_means(guide)
def chain(hw, buf):
    prods, coef = buf("p", K * hw), buf("c", (G + 1) * C * hw)
    gf._products_kernel[(1,)](src, *src.stride(), prods, guide, shift, W, C, hw, W, *guide.stride(),
                              G=G, ACC=tl.float32, BLOCK=W)
    gf._coef_kernel[(1,)](prods, coef, eps, W, C, hw, G=G, ACC=tl.float32, BLOCK=W)
    out = torch.empty(1, C, 1, W)
    gf._apply_kernel[(1,)](coef, out, *out.stride(), guide, shift, W, C, hw, W, *guide.stride(),
                           G=G, ACC=tl.float32, BLOCK=W)
    pick = lambda t, n: t.as_strided((n, W), (hw, 1)).clone()
    return pick(prods, K), pick(coef, (G + 1) * C), out
small = chain(W, lambda name, n: torch.empty(n))
huge = chain(2**29 + 3, lambda name, n: sparse(name, n))  # K * HW > 2^33
for x, e, what in zip(huge, small, ("products", "coefficients", "output")):
    close(x, e, f"guided filter {what}")
print("int64 ok")
"""


def test_offsets_past_2_to_the_31_elements(tmp_path):
    """The kernels that multiplied int32 loop counters by strides or plane sizes, on views
    whose offsets pass 2^31 elements: sparse files give the address space (about 60 GB,
    never written but for a few pages). In a subprocess: a wrapped offset faults."""
    _triton_module("grad_weighted_map")
    proc = subprocess.run([sys.executable, "-c", _INT64_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "TRITON_INTERPRET": "1"})
    assert proc.returncode == 0 and "int64 ok" in proc.stdout, proc.stdout + proc.stderr


# ============================================================== channels-last under torch.compile


@pytest.mark.slow
def test_box_and_guided_filter_compile_with_channels_last_inputs():
    """Inductor asserts the strides the fake kernels promise: the kernels return contiguous
    tensors whatever the input layout, so must the fakes (box_filter's followed the input)."""

    def fn(g, s):
        return (camfast.ops.box_filter(s, 2) - camfast.ops.box_filter(s * 2.0, 1)).square().mean() + \
            camfast.ops.guided_filter(g, s, 2, 0.1).square().mean()

    compiled = torch.compile(fn, fullgraph=True)
    gen = torch.Generator().manual_seed(0)
    g = torch.rand(2, 3, 9, 8, generator=gen).contiguous(memory_format=torch.channels_last)
    s = torch.rand(2, 3, 9, 8, generator=gen).contiguous(memory_format=torch.channels_last)
    def loss_and_grads(f):
        leaves = (g.clone().requires_grad_(True), s.clone().requires_grad_(True))
        loss = f(*leaves)
        return (loss.detach(), *torch.autograd.grad(loss, leaves))

    expected = loss_and_grads(fn)
    for got, e, what in zip(loss_and_grads(compiled), expected, ("loss", "d/dguide", "d/dsrc")):
        assert_close(got, e, torch.float32, what)


def test_box_filter_fakes_promise_contiguous_outputs():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.empty(2, 3, 9, 8).contiguous(memory_format=torch.channels_last)
        assert torch.ops.camfast.box_filter(x, 2).is_contiguous()
        assert torch.ops.camfast.box_filter_backward(x, 2).is_contiguous()
    real = torch.rand(2, 3, 9, 8).contiguous(memory_format=torch.channels_last)
    for backend in camfast.ops.available_backends("cpu"):
        with use_backend(backend):
            assert camfast.ops.box_filter(real, 2).is_contiguous(), backend


# ============================================================== on a GPU (scripts/gpu-check.sh)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("op", TRITON_OPS)
def test_cuda_triton_on_a_device_that_is_not_current(op):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    _triton_module(op)
    with torch.cuda.device(0), use_backend("triton"):
        _run_op(op, "cuda:1")
    torch.cuda.synchronize(1)


@pytest.mark.cuda
@needs_cuda
def test_cuda_default_backend_runs_on_this_gpu():
    """Whatever the routing picks for this GPU (native only where the build has code for it)
    runs every op, forward and backward."""
    for op in TRITON_OPS:
        backend = _backend.resolve(CUDA, op)
        _run_op(op, "cuda")
        torch.cuda.synchronize()
        assert backend in camfast.ops.available_backends("cuda"), (op, backend)


@pytest.mark.cuda
@needs_cuda
def test_cuda_upsample_aggregate_backward_is_bitwise_deterministic():
    if "triton" not in camfast.ops.available_backends("cuda"):
        pytest.skip("triton not available")
    gen = torch.Generator(device="cuda").manual_seed(0)
    maps = [torch.randn(4, 7, 7, device="cuda", generator=gen), torch.randn(4, 14, 14, device="cuda", generator=gen)]
    grad_out = torch.randn(4, 224, 224, device="cuda", generator=gen)

    def grads():
        leaves = [m.clone().requires_grad_(True) for m in maps]
        return torch.autograd.grad(camfast.ops.upsample_aggregate(leaves, (224, 224)), leaves, grad_out)

    with deterministic():
        runs = [grads() for _ in range(3)]
    for run in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], run))
    with use_backend("reference"):
        for a, e in zip(runs[0], grads()):
            assert_close(a, e, torch.float32, "deterministic gradient")


@pytest.mark.cuda
@needs_cuda
def test_cuda_tap_triton_forward_captures_in_a_cuda_graph():
    if "triton" not in camfast.ops.available_backends("cuda"):
        pytest.skip("triton not available")
    from camfast.ops.triton import thresholded_avg_pool2d as tap

    x = torch.rand(4, 64, 7, 7, device="cuda")
    expected = tap.forward(x, 0.25)  # compiles the kernel before the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = tap.forward(x, 0.25)
    graph.replay()
    torch.cuda.synchronize()
    for a, e in zip(captured, expected):
        assert torch.equal(a, e)
