"""Every public op validates its arguments, backward ops too (issue 13 item 1; issue 14
item 9), and the kernel codes are defined once (camfast/ops/codes.json) and checked against
the compiled module.

* ``torch.ops.camfast.*_backward`` called directly with a ``grad_out``/``out``/``tau``/``count``
  that does not match the inputs raises a clean ``ValueError``/``TypeError`` naming the
  argument, in the op and in its fake kernel, instead of reading and writing out of bounds
  (the crash cases run in a subprocess, so a segfault fails the test instead of the run).
* The native backward launchers take ``grad_out`` in any floating dtype and layout.
* ``camfast._C`` exports the code table it was built with; a stale one is refused at load;
  its range checks and messages come from the table; the table is part of its fingerprint.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import camfast
from camfast import _ext
from camfast.ops import _backend, _spec, codes

ops = torch.ops.camfast
ROOT = Path(__file__).resolve().parents[1]
requires_native = pytest.mark.skipif(_ext.native is None, reason="camfast._C not loaded")


def _gwm(B=2, C=3, H=4, W=5, dtype=torch.float32):
    a, g = torch.randn(B, C, H, W, dtype=dtype), torch.randn(B, C, H, W, dtype=dtype)
    out = ops.grad_weighted_map(a, g, "zoom")
    return a, g, out, torch.randn_like(out)


def _tap(B=2, C=3, H=4, W=5, dtype=torch.float32):
    x = torch.rand(B, C, H, W, dtype=dtype)
    pooled, tau, count = ops.thresholded_avg_pool2d(x, 0.1)
    return x, tau, count, torch.randn_like(pooled)


def _ua(B=2, dtype=torch.float32):
    maps = [torch.rand(B, 3, 4, dtype=dtype), torch.rand(B, 6, 5, dtype=dtype)]
    return maps, torch.randn(B, 7, 8, dtype=dtype)


def _gf(B=1, C=2, H=6, W=7, dtype=torch.float32):
    return torch.rand(B, 1, H, W, dtype=dtype), torch.rand(B, C, H, W, dtype=dtype), torch.randn(B, C, H, W, dtype=dtype)


def _ns(shape=(2, 3, 4, 5), dtype=torch.float32):
    return tuple(torch.randn(shape, dtype=dtype) for _ in range(4))


def _run(code: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter (a crash is its exit status, not the test run's)."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("CAMFAST_REQUIRE_NATIVE", "CAMFAST_BACKEND")}
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env,
                          timeout=timeout)


# ------------------------------------------------ bad arguments of the backward ops
def _gwm_call(**change):
    a, g, out, go = _gwm()
    args = dict(grad_out=go, activation=a, gradient=g, out=out, mode="zoom") | change
    return lambda: ops.grad_weighted_map_backward(*args.values())


def _tap_call(**change):
    x, tau, count, go = _tap()
    args = dict(grad_out=go, x=x, tau=tau, count=count) | change
    return lambda: ops.thresholded_avg_pool2d_backward(*args.values())


def _ua_call(**change):
    maps, go = _ua()
    args = dict(grad_out=go, maps=maps, reduce="max", normalize="minmax", weights=None) | change
    return lambda: ops.upsample_aggregate_backward(*args.values())


def _ns_call(**change):
    x, a, w, go = _ns()
    args = dict(grad_out=go, x=x, a=a, w=w) | change
    return lambda: ops.neighbour_stencil_backward(*args.values())


def _gf_call(**change):
    guide, src, go = _gf()
    args = dict(grad_out=go, guide=guide, src=src, radius=1, eps=1e-2, subsample=1, border="truncate",
                need_guide=True, need_src=True) | change
    return lambda: ops.guided_filter_backward(*args.values())


BAD_BACKWARD = [
    # grad_weighted_map_backward: grad_out and out are [B, H, W] beside activation [B, C, H, W]
    ("gwm grad_out too small", lambda: _gwm_call(grad_out=torch.randn(1, 1, 1)), ValueError,
     r"grad_out has shape \(1, 1, 1\) but must have shape \(2, 4, 5\) for activation of shape \(2, 3, 4, 5\)"),
    ("gwm grad_out rank", lambda: _gwm_call(grad_out=torch.randn(2, 20)), ValueError, "grad_out must have 3 dimensions"),
    ("gwm out too small", lambda: _gwm_call(out=torch.randn(2, 4, 4)), ValueError, "out has shape"),
    ("gwm out dtype", lambda: _gwm_call(out=torch.randn(2, 4, 5, dtype=torch.float64)), TypeError,
     "out must have dtype torch.float32"),
    ("gwm grad_out integer", lambda: _gwm_call(grad_out=torch.ones(2, 4, 5, dtype=torch.int64)), TypeError,
     "grad_out must have a floating dtype"),
    ("gwm grad_out device", lambda: _gwm_call(grad_out=torch.randn(2, 4, 5, device="meta")), ValueError,
     "grad_out is on meta"),
    ("gwm grad_out sparse", lambda: _gwm_call(grad_out=torch.randn(2, 4, 5).to_sparse()), TypeError,
     "grad_out must be a dense"),
    ("gwm gradient shape", lambda: _gwm_call(gradient=torch.randn(2, 3, 4, 4)), ValueError, "gradient has shape"),
    ("gwm mode", lambda: _gwm_call(mode="nope"), ValueError, "mode must be one of"),
    # thresholded_avg_pool2d_backward: grad_out [B, C]; tau, count [B, C] in the accumulator dtype
    ("tap grad_out too small", lambda: _tap_call(grad_out=torch.randn(1, 1)), ValueError,
     r"grad_out has shape \(1, 1\) but must have shape \(2, 3\)"),
    ("tap tau too small", lambda: _tap_call(tau=torch.zeros(1)), ValueError, "tau must have 2 dimensions"),
    ("tap count too small", lambda: _tap_call(count=torch.ones(2, 1)), ValueError, "count has shape"),
    ("tap tau dtype", lambda: _tap_call(tau=torch.zeros(2, 3, dtype=torch.float64)), TypeError,
     "tau must have dtype torch.float32"),
    ("tap count dtype", lambda: _tap_call(count=torch.ones(2, 3, dtype=torch.float16)), TypeError,
     "count must have dtype torch.float32"),
    ("tap x rank", lambda: _tap_call(x=torch.rand(2, 3, 4)), ValueError, "x must have 4 dimensions"),
    # upsample_aggregate_backward: grad_out [B, H, W] with the maps' B
    ("ua grad_out batch", lambda: _ua_call(grad_out=torch.randn(64, 7, 8)), ValueError,
     r"grad_out has shape \(64, 7, 8\) but must have shape \(2, \*, \*\) for maps\[0\]"),
    ("ua grad_out rank", lambda: _ua_call(grad_out=torch.randn(2, 56)), ValueError, "grad_out must have 3 dimensions"),
    ("ua grad_out empty", lambda: _ua_call(grad_out=torch.randn(2, 0, 8)), ValueError, "grad_out must not be empty"),
    ("ua maps batch", lambda: _ua_call(maps=[torch.rand(2, 3, 4), torch.rand(3, 3, 4)]), ValueError,
     r"maps\[1\] has batch size"),
    ("ua reduce", lambda: _ua_call(reduce="median"), ValueError, "reduce must be one of"),
    ("ua weights", lambda: _ua_call(reduce="sum", weights=[1.0]), ValueError, "weights has 1 entries"),
    # box_filter_backward / guided_filter_backward
    ("box grad_out rank", lambda: lambda: ops.box_filter_backward(torch.randn(3, 4, 5), 1), ValueError,
     "grad_out must have 4 dimensions"),
    ("box radius", lambda: lambda: ops.box_filter_backward(torch.randn(1, 1, 4, 5), -1), ValueError,
     "radius must be an int >= 0"),
    ("gf grad_out shape", lambda: _gf_call(grad_out=torch.randn(1, 2, 6, 6)), ValueError,
     r"grad_out has shape \(1, 2, 6, 6\) but must have shape \(1, 2, 6, 7\) for src"),
    ("gf eps", lambda: _gf_call(eps=0.0), ValueError, "eps must be a finite float > 0"),
    # neighbour_stencil_backward: grad_out, x, a, w all [B, C, H, W], one dtype and device
    ("ns grad_out too small", lambda: _ns_call(grad_out=torch.randn(1, 1, 1, 1)), ValueError,
     r"grad_out has shape \(1, 1, 1, 1\) but must have shape \(2, 3, 4, 5\) for x of shape \(2, 3, 4, 5\)"),
    ("ns grad_out rank", lambda: _ns_call(grad_out=torch.randn(2, 3, 20)), ValueError,
     r"grad_out must have 4 dimensions"),
    ("ns grad_out dtype", lambda: _ns_call(grad_out=torch.randn(2, 3, 4, 5, dtype=torch.float64)), TypeError,
     "grad_out must have dtype torch.float32 for x of dtype torch.float32, got torch.float64"),
    ("ns grad_out integer", lambda: _ns_call(grad_out=torch.ones(2, 3, 4, 5, dtype=torch.int64)), TypeError,
     "grad_out must have a floating dtype"),
    ("ns grad_out device", lambda: _ns_call(grad_out=torch.randn(2, 3, 4, 5, device="meta")), ValueError,
     "grad_out is on meta"),
    ("ns grad_out sparse", lambda: _ns_call(grad_out=torch.randn(2, 3, 4, 5).to_sparse()), TypeError,
     "grad_out must be a dense"),
    ("ns a shape", lambda: _ns_call(a=torch.randn(2, 3, 4, 4)), ValueError,
     r"a has shape \(2, 3, 4, 4\) but x has \(2, 3, 4, 5\)"),
    ("ns w dtype", lambda: _ns_call(w=torch.randn(2, 3, 4, 5, dtype=torch.float64)), TypeError,
     "w has dtype torch.float64 but x has torch.float32"),
    ("ns x rank", lambda: _ns_call(x=torch.randn(2, 3, 20)), ValueError, "x must have 4 dimensions"),
    ("ns x empty", lambda: _ns_call(x=torch.randn(2, 3, 0, 5)), ValueError, "x must not be empty"),
]


@pytest.mark.parametrize("make, exc, match", [c[1:] for c in BAD_BACKWARD], ids=[c[0] for c in BAD_BACKWARD])
def test_backward_op_rejects_mismatched_arguments(backend, device, make, exc, match):
    if device.type != "cpu":
        pytest.skip("the bad inputs are built on the CPU")
    call = make()
    with pytest.raises(exc, match=match):
        call()


FAKEABLE = [c for c in BAD_BACKWARD if "device" not in c[0] and "sparse" not in c[0]]


@pytest.mark.parametrize("make, exc, match", [c[1:] for c in FAKEABLE], ids=[c[0] for c in FAKEABLE])
def test_backward_fake_kernel_rejects_mismatched_arguments(make, exc, match):
    """The same checks run in the fake kernels (torch.compile, meta tensors)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    call = make()  # built from real tensors, then called on their fake counterparts
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode, pytest.raises(exc, match=match):
        call()


# The calls that read or wrote out of bounds on main (segfault, or uninitialised memory).
CRASHES = {
    "grad_weighted_map": """
        a = torch.randn(8, 64, 96, 96); g = torch.randn_like(a)
        out = torch.ops.camfast.grad_weighted_map(a, g, "zoom")
        torch.ops.camfast.grad_weighted_map_backward(torch.randn(1, 1, 1), a, g, torch.randn(1, 1, 1), "zoom")
    """,
    "thresholded_avg_pool2d": """
        x = torch.rand(64, 256, 16, 16)
        torch.ops.camfast.thresholded_avg_pool2d_backward(torch.randn(1, 1), x, torch.zeros(1, 1), torch.ones(1, 1))
    """,
    "neighbour_stencil": """
        x = torch.rand(64, 256, 16, 16); a = torch.rand_like(x); w = torch.rand_like(x)
        torch.ops.camfast.neighbour_stencil_backward(torch.randn(1, 1, 1, 1), x, a, w)
    """,
    "upsample_aggregate": """
        maps = [torch.rand(1, 4, 4), torch.rand(1, 8, 8)]
        torch.ops.camfast.upsample_aggregate_backward(torch.randn(4096, 64, 64), maps, "max", "minmax", None)
    """,
}


@pytest.mark.parametrize("op", sorted(CRASHES))
@pytest.mark.parametrize("name", ["native", "reference"])
def test_backward_op_mismatch_is_a_python_error_not_a_crash(op, name):
    if name == "native" and _backend.unavailable_reason("native", torch.device("cpu")) is not None:
        pytest.skip("camfast._C not loaded")
    body = textwrap.indent(textwrap.dedent(CRASHES[op]).strip(), " " * 8)
    code = (f"import torch, camfast\ntry:\n    with camfast.ops.use_backend({name!r}):\n{body}\n"
            "except (ValueError, TypeError) as exc:\n    print('RAISED', type(exc).__name__, exc)\n"
            "else:\n    print('NO ERROR')\n")
    proc = _run(code, timeout=300)
    assert proc.returncode == 0, f"the bad call crashed the interpreter (exit {proc.returncode}): {proc.stderr[-2000:]}"
    assert "RAISED ValueError" in proc.stdout and "grad_out has shape" in proc.stdout, proc.stdout + proc.stderr


# ------------------------------------------------ valid direct calls: unchanged, any grad_out dtype/layout
def test_backward_ops_called_directly_match_autograd(backend, device):
    if device.type != "cpu":
        pytest.skip("CPU inputs")
    a, g, _, go = _gwm()
    a.requires_grad_(True)
    g.requires_grad_(True)
    out = camfast.ops.grad_weighted_map(a, g, "layercam")
    da, dg = torch.autograd.grad(out, (a, g), go)
    da2, dg2 = ops.grad_weighted_map_backward(go, a.detach(), g.detach(), out.detach(), "layercam")
    torch.testing.assert_close((da2, dg2), (da, dg), rtol=0, atol=0)


@pytest.mark.parametrize("layout", ["float64", "float16", "transposed"])
def test_native_backward_takes_grad_out_in_any_dtype_and_layout(layout):
    """Issue 14 item 9: the native launchers convert grad_out to the inputs' dtype and make it
    contiguous, as the kernels read it (on main a float64 grad_out was read as float32)."""
    if _backend.unavailable_reason("native", torch.device("cpu")) is not None:
        pytest.skip("camfast._C not loaded")

    def same(backward, go, *args):
        """backward given grad_out as `layout` equals backward given it as float32, contiguous."""
        given = go.transpose(-1, -2).contiguous().transpose(-1, -2) if layout == "transposed" else go.to(
            getattr(torch, layout))
        torch.testing.assert_close(backward(given, *args), backward(given.float().contiguous(), *args),
                                   rtol=0, atol=0)

    with camfast.ops.use_backend("native"):
        a, g, out, go = _gwm(H=6, W=6)
        for mode in _spec.GWM_MODES:
            same(ops.grad_weighted_map_backward, go, a, g, ops.grad_weighted_map(a, g, mode), mode)
        maps, go = _ua()
        for reduce in _spec.UA_REDUCES:
            same(ops.upsample_aggregate_backward, go[:, :7, :7], maps, reduce, "minmax", None)
        x, tau, count, go = _tap(H=5)
        same(ops.thresholded_avg_pool2d_backward, go, x, tau, count)
        guide, src, go = _gf(H=7)
        same(lambda *args: ops.guided_filter_backward(*args)[1], go, guide, src, 1, 1e-2, 1, "truncate", False, True)
        if layout == "transposed":  # its schema check takes grad_out in x's dtype only (any layout)
            x, a, w, go = _ns(shape=(2, 3, 6, 7))
            same(ops.neighbour_stencil_backward, go, x, a, w)


# ------------------------------------------------ the code table
def test_python_table_names_the_codes_the_backends_use():
    assert _spec.GWM_MODES == {"zoom": 0, "gradcam": 1, "layercam": 2, "gradcampp": 3, "xgradcam": 4}
    assert _spec.UA_REDUCES == {"max": 0, "mean": 1, "sum": 2}
    assert _spec.UA_NORMALIZES == {"minmax": 0, "none": 1}
    assert _spec.GF_BORDERS == {"truncate": 0, "reflect": 1}
    assert _spec.DEVICES == {"cpu": 0, "cuda": 1}
    assert (_spec.UA_EPS, _spec.UA_MAX_LAYERS) == (1e-7, 64)
    from camfast.ops.native._launch import DTYPE_CODES

    assert DTYPE_CODES == {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}


@requires_native
def test_compiled_module_exports_the_table_it_was_built_with():
    assert _ext.native.codes() == codes.table()
    assert codes.mismatch(_ext.native.codes()) is None


def test_mismatch_names_what_differs():
    stale = codes.table()
    stale["enums"]["GwmMode"] = ["zoom", "gradcam", "layercam"]
    stale["constants"]["UA_MAX_LAYERS"] = 32
    msg = codes.mismatch(stale)
    assert "GwmMode: built with ['zoom', 'gradcam', 'layercam'], codes.json has ['zoom', 'gradcam', 'layercam', " in msg
    assert "UA_MAX_LAYERS: built with 32, codes.json has 64" in msg
    del stale["enums"]["BoxBorder"]
    assert "BoxBorder: built with None" in codes.mismatch(stale)


@requires_native
@pytest.mark.parametrize("change, arg", [({"mode": len(_spec.GWM_MODES)}, "mode"), ({"dtype": 4}, "dtype"), ({"device": 2}, "device"),
                                         ({"mode": -1}, "mode")])
def test_compiled_range_checks_come_from_the_table(change, arg):
    a = torch.randn(2, 3, 4, 5)
    out, ws = torch.empty(2, 4, 5), torch.empty(12)
    kwargs = dict(device=0, device_index=0, dtype=0, mode=0, sizes=(2, 3, 4, 5), a=a.data_ptr(),
                  a_strides=a.stride(), g=a.data_ptr(), g_strides=a.stride(), out=out.data_ptr(),
                  workspace=ws.data_ptr(), stream=0) | change
    table = {"mode": _spec.GWM_MODES, "dtype": _spec.DTYPES, "device": _spec.DEVICES}[arg]
    names = [f"{code} ({name})" for name, code in table.items()]
    allowed = ", ".join(names[:-1]) + " or " + names[-1]
    with pytest.raises(ValueError) as info:
        _ext.native.grad_weighted_map_forward(**kwargs)
    assert str(info.value) == f"camfast._C: unknown {arg} code {change[arg]}: {arg} must be {allowed}"


@requires_native
def test_compiled_option_codes_of_every_op_are_checked():
    x = torch.rand(1, 1, 4, 5)
    with pytest.raises(ValueError, match=r"unknown border code 2: border must be 0 \(truncate\) or 1 \(reflect\)"):
        _ext.native.guided_filter(0, 0, (1, 1, 1, 4, 5), 1, 0.1, 2, False, False, x.data_ptr(), x.stride(),
                                  x.data_ptr(), x.stride(), x.data_ptr(), x.stride())
    m = torch.rand(1, 3, 4)
    for reduce, normalize, arg in ((3, 0, "reduce"), (0, 2, "normalize")):
        with pytest.raises(ValueError, match=f"unknown {arg} code"):
            _ext.native.upsample_aggregate_forward(0, 0, 0, reduce, normalize, (1, 5, 6), [m.data_ptr()], [(3, 4)],
                                                   [m.stride()], [1.0], x.data_ptr(), x.data_ptr(), 0)


# A stand-in camfast._C that reports another table (an old build, or one from another checkout).
STALE_NATIVE = """
import sys, types
stale = types.ModuleType("camfast._C"); stale.__file__ = "/stale/_C.so"
stale.codes = lambda: {"enums": {"GwmMode": ["zoom", "gradcam"]}, "constants": {}}
sys.modules["camfast._C"] = stale
"""


def test_stale_compiled_table_is_refused_with_a_clear_message():
    proc = _run(STALE_NATIVE + textwrap.dedent("""
        import warnings, torch
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import camfast
            from camfast import _ext
        msgs = [str(w.message) for w in caught if issubclass(w.category, camfast.NativeExtensionWarning)]
        assert len(msgs) == 1, msgs
        assert "built with other kernel codes" in msgs[0] and "GwmMode" in msgs[0] and "rebuild" in msgs[0], msgs
        assert _ext.native is None
        assert "native" not in camfast.ops.available_backends("cpu")
        a = torch.randn(1, 2, 3, 3)
        torch.testing.assert_close(camfast.ops.grad_weighted_map(a, a, "zoom"), (a * a).sum(1).relu())
        print("refused ok")
    """))
    assert proc.returncode == 0, proc.stderr
    assert "refused ok" in proc.stdout


def test_stale_compiled_table_is_an_error_when_native_is_required():
    proc = _run(STALE_NATIVE + "import camfast\n", CAMFAST_REQUIRE_NATIVE="1")
    assert proc.returncode != 0
    assert "CAMFAST_REQUIRE_NATIVE=1 but camfast._C could not be loaded" in proc.stderr
    assert "built with other kernel codes" in proc.stderr


def test_the_table_is_part_of_the_source_fingerprint(tmp_path):
    shutil.copytree(ROOT / "csrc", tmp_path / "csrc")
    (tmp_path / "camfast" / "ops").mkdir(parents=True)
    table = tmp_path / _ext.CODES_TABLE
    shutil.copy(codes.TABLE_PATH, table)
    assert _ext.source_hash(tmp_path / "csrc") == _ext.source_hash(ROOT / "csrc")
    raw = json.loads(table.read_text())
    raw["enums"][2]["values"].append(["xgradcam", "XGradCAM"])
    table.write_text(json.dumps(raw))
    assert _ext.source_hash(tmp_path / "csrc") != _ext.source_hash(ROOT / "csrc")


# ------------------------------------------------ CUDA availability is probed, not assumed
@requires_native
def test_cuda_status_explains_has_cuda():
    problem = _ext.native.cuda_status()
    assert _ext.native.has_cuda() == (problem is None)
    if not _ext.native.built_with_cuda():
        assert not _ext.native.has_cuda() and "no CUDA kernels" in problem
    reason = _backend.unavailable_reason("native", torch.device("cuda"))
    if not _ext.native.has_cuda():
        assert reason is not None and problem in reason
    else:
        assert reason is None
