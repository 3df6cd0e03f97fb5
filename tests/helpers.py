"""Test helpers shared by every op's tests: the tolerance table, comparisons, layouts, and
the backend guard."""

from __future__ import annotations

import os

import pytest
import torch

from camfast.ops import _backend

# CAMFAST_REQUIRE_NATIVE=1 (scripts/test.sh, CI): a test needing the native backend fails
# instead of skipping when it is unavailable.
REQUIRE_NATIVE = os.environ.get("CAMFAST_REQUIRE_NATIVE") == "1"

# One tolerance table for every op: (atol, rtol) per dtype, for a kernel against the
# reference on outputs of order one. float32/float16/bfloat16 accumulate in float32.
TOLERANCES = {
    torch.float64: (1e-10, 1e-9),
    torch.float32: (1e-5, 1.3e-6 * 4),
    torch.float16: (1e-4, 1e-3),
    torch.bfloat16: (1e-3, 8e-3),
}

DTYPES = list(TOLERANCES)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype | None = None, what: str = "") -> None:
    """``torch.testing.assert_close`` with the table's tolerance, naming where it differs most."""
    atol, rtol = TOLERANCES[dtype or expected.dtype]
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    a = actual.detach().double().cpu()
    e = expected.detach().double().cpu()
    try:
        torch.testing.assert_close(a, e, atol=atol, rtol=rtol, equal_nan=True)
    except AssertionError as err:
        diff = (a - e).abs().nan_to_num(float("inf"))
        idx = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape))
        raise AssertionError(
            f"{what}: max |diff| {diff.max().item():.3g} at {idx}: got {a[idx].item():.8g}, "
            f"expected {e[idx].item():.8g} (atol {atol}, rtol {rtol})\n{err}"
        ) from None


def make_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as ``x`` ([B,C,H,W]) in another memory layout."""
    if layout == "contiguous":
        return x.contiguous()
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "strided":  # a view into a larger tensor with gaps on every axis
        B, C, H, W = x.shape
        big = torch.full((B, 2 * C, H + 1, 2 * W + 1), float("nan"), dtype=x.dtype, device=x.device)
        view = big[:, ::2, 1:, 1::2]
        view.copy_(x)
        return view
    if layout == "transposed":  # H and W swapped in memory
        return x.transpose(2, 3).contiguous().transpose(2, 3)
    raise ValueError(layout)


LAYOUTS = ["contiguous", "channels_last", "strided", "transposed"]


def require_backend(name: str, device: torch.device) -> None:
    """Skip the test unless backend ``name`` runs on ``device`` (fail instead for the native
    backend under ``CAMFAST_REQUIRE_NATIVE=1``)."""
    reason = _backend.unavailable_reason(name, device)
    if reason is None:
        return
    if name == "native" and REQUIRE_NATIVE:
        pytest.fail(f"native backend required but unavailable on {device}: {reason}")
    pytest.skip(reason)
