"""The compiled module rejects bad raw arguments instead of crashing (grad_weighted_map's entry
points). Bad input to the ops themselves is the op contract's (test_op_contract.py, op_specs)."""

from __future__ import annotations

import pytest
import torch

from camfast import _ext


def good(shape=(2, 3, 4, 5), dtype=torch.float32):
    return torch.randn(shape, dtype=dtype), torch.randn(shape, dtype=dtype)


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
