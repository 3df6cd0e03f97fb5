"""Bad input gets a clear error naming the argument, on every backend, before any kernel runs;
the compiled module rejects bad raw arguments instead of crashing."""

from __future__ import annotations

import pytest
import torch

from camfast import _ext
from camfast.ops import grad_weighted_map


def good(shape=(2, 3, 4, 5), dtype=torch.float32):
    return torch.randn(shape, dtype=dtype), torch.randn(shape, dtype=dtype)


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda: ([1.0], good()[1], "zoom"), TypeError, "activation must be a torch.Tensor"),
        (lambda: (good()[0], None, "zoom"), TypeError, "gradient must be a torch.Tensor"),
        (lambda: (good()[0].int(), good()[1].int(), "zoom"), TypeError, "activation must have a floating dtype"),
        (lambda: (good()[0], good()[1].long(), "zoom"), TypeError, "gradient must have a floating dtype"),
        (lambda: (good()[0].to(torch.complex64), good()[1], "zoom"), TypeError, "activation must have a floating"),
        (lambda: (good()[0], good()[1].double(), "zoom"), TypeError, "gradient has dtype torch.float64"),
        (lambda: (torch.randn(3, 4, 5), torch.randn(3, 4, 5), "zoom"), ValueError, r"activation must have 4 dimensions \[B, C, H, W\]"),
        (lambda: (good()[0], torch.randn(2, 3, 4), "zoom"), ValueError, "gradient must have 4 dimensions"),
        (lambda: (good()[0], torch.randn(2, 3, 4, 6), "zoom"), ValueError, r"gradient has shape \(2, 3, 4, 6\) but activation"),
        (lambda: (torch.randn(0, 3, 4, 5), torch.randn(0, 3, 4, 5), "zoom"), ValueError, "activation must not be empty"),
        (lambda: (torch.randn(2, 3, 0, 5), torch.randn(2, 3, 0, 5), "zoom"), ValueError, "activation must not be empty"),
        (lambda: (*good(), "hirescam"), ValueError, "mode must be one of"),
        (lambda: (*good(), 3), ValueError, "mode must be one of"),
        (lambda: (good()[0], torch.randn(2, 3, 4, 5, device="meta"), "zoom"), ValueError, "gradient is on meta"),
        (lambda: (good()[0].to_sparse(), good()[1], "zoom"), TypeError, "activation must be a dense"),
    ],
)
def test_bad_input(backend, make, exc, match):
    with pytest.raises(exc, match=match):
        grad_weighted_map(*make())


requires_native = pytest.mark.skipif(_ext.native is None, reason="camfast._C not loaded")


@requires_native
@pytest.mark.parametrize(
    "change, match",
    [
        ({"sizes": (2, 0, 4, 5)}, "every size must be positive"),
        ({"sizes": (2, 3, -4, 5)}, "every size must be positive"),
        ({"a": 0}, "null data pointer for activation"),
        ({"out": 0}, "null data pointer for out"),
        ({"dtype": 7}, "unknown dtype code"),
        ({"mode": 9}, "unknown mode code"),
        ({"device": 5}, "device must be 0"),
        ({"a_strides": (-1, 1, 1, 1)}, "negative stride in activation"),
    ],
)
def test_native_module_rejects_bad_raw_arguments(change, match):
    a, g = good()
    out = torch.empty(2, 4, 5)
    ws = torch.empty(12)
    kwargs = dict(device=0, device_index=0, dtype=0, mode=0, sizes=(2, 3, 4, 5), a=a.data_ptr(),
                  a_strides=a.stride(), g=g.data_ptr(), g_strides=g.stride(), out=out.data_ptr(),
                  workspace=ws.data_ptr(), stream=0)
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        _ext.native.grad_weighted_map_forward(**kwargs)


@requires_native
def test_native_module_without_cuda_refuses_cuda_device():
    if _ext.native.has_cuda():
        pytest.skip("this build has CUDA kernels")
    a, g = good()
    with pytest.raises(ValueError, match="no CUDA kernels"):
        _ext.native.grad_weighted_map_forward(1, 0, 0, 0, (2, 3, 4, 5), a.data_ptr(), a.stride(),
                                              g.data_ptr(), g.stride(), a.data_ptr(), a.data_ptr(), 0)


def test_direct_op_call_is_checked_too(backend):
    """torch.ops.camfast.* bypasses the Python wrapper; the op still checks before a kernel reads."""
    a = torch.randn(2, 3, 4, 5)
    with pytest.raises(ValueError, match="gradient has shape"):
        torch.ops.camfast.grad_weighted_map(a, torch.randn(2, 3, 4, 4), "zoom")
    with pytest.raises(ValueError, match="mode must be one of"):
        torch.ops.camfast.grad_weighted_map(a, a, "nope")
