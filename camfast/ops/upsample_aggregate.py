"""``camfast::upsample_aggregate``: Zoom-CAM's fusion of per-layer maps into one full-size map.

Defined once as a ``torch.library`` custom op with a fake (meta) kernel for
``torch.compile`` and an explicit backward op. The backend (native, triton, reference) is
chosen at run time by ``camfast.ops._backend``.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence

import torch
from torch import Tensor

from camfast.ops._dispatch import implementation
from camfast.ops._spec import UA_MAX_LAYERS, UA_NORMALIZES, UA_REDUCES
from camfast.ops._validate import check_choice, check_like, check_size2, check_tensor_list

_OP = "upsample_aggregate"


def _check_weights(weights: object, n_layers: int, reduce: str) -> None:
    if weights is None:
        return
    if reduce != "sum":
        raise ValueError(f"weights are only used with reduce='sum' (a weighted sum); got reduce={reduce!r}")
    if not isinstance(weights, (list, tuple)) or not all(
        isinstance(w, numbers.Real) and not isinstance(w, bool) for w in weights
    ):
        raise TypeError(f"weights must be a sequence of floats or a 1-D tensor, got {weights!r}")
    if len(weights) != n_layers:
        raise ValueError(f"weights has {len(weights)} entries but maps has {n_layers} layers; they must match")
    if not all(math.isfinite(w) for w in weights):
        raise ValueError(f"weights must be finite, got {list(weights)!r}")


def _check_layers(maps: Sequence[Tensor], reduce: str, normalize: str, weights: Sequence[float] | None) -> None:
    check_tensor_list("maps", maps, 3, "[B, h, w]", UA_MAX_LAYERS)
    check_choice("reduce", reduce, tuple(UA_REDUCES))
    check_choice("normalize", normalize, tuple(UA_NORMALIZES))
    _check_weights(weights, len(maps), reduce)


def _check(maps: Sequence[Tensor], size: Sequence[int], reduce: str, normalize: str,
           weights: Sequence[float] | None) -> None:
    # Runs inside the op (eager) and its fake kernel (torch.compile): direct calls of
    # torch.ops.camfast.upsample_aggregate are checked too, before any kernel sees the data.
    _check_layers(maps, reduce, normalize, weights)
    H, W = check_size2("size", size)
    if isinstance(H, int) and isinstance(W, int):
        n = maps[0].shape[0] * H * W
        if n * maps[0].element_size() >= 2 ** 63:
            raise ValueError(f"size {tuple(size)!r} asks for an output of {maps[0].shape[0]} x {H} x {W} = {n} "
                             "elements, more than a tensor can address")


def _check_backward(grad_out: Tensor, maps: Sequence[Tensor], reduce: str, normalize: str,
                    weights: Sequence[float] | None) -> None:
    # Inside the backward op and its fake kernel: grad_out is the gradient of the [B, H, W]
    # output (any H, W: the output size is not an argument of the backward).
    _check_layers(maps, reduce, normalize, weights)
    check_like("grad_out", grad_out, (maps[0].shape[0], None, None), "maps[0]", maps[0])


@torch.library.custom_op("camfast::upsample_aggregate", mutates_args=())
def _forward_op(maps: list[Tensor], size: Sequence[int], reduce: str, normalize: str,
                weights: Sequence[float] | None) -> Tensor:
    _check(maps, size, reduce, normalize, weights)
    return implementation(_OP, maps[0].device).forward(maps, (int(size[0]), int(size[1])), reduce, normalize, weights)


@_forward_op.register_fake
def _(maps: list[Tensor], size: Sequence[int], reduce: str, normalize: str,
      weights: Sequence[float] | None) -> Tensor:
    _check(maps, size, reduce, normalize, weights)
    return maps[0].new_empty((maps[0].shape[0], size[0], size[1]))


@torch.library.custom_op("camfast::upsample_aggregate_backward", mutates_args=())
def _backward_op(grad_out: Tensor, maps: list[Tensor], reduce: str, normalize: str,
                 weights: Sequence[float] | None) -> list[Tensor]:
    _check_backward(grad_out, maps, reduce, normalize, weights)
    return implementation(_OP, maps[0].device).backward(grad_out, maps, reduce, normalize, weights)


@_backward_op.register_fake
def _(grad_out: Tensor, maps: list[Tensor], reduce: str, normalize: str,
      weights: Sequence[float] | None) -> list[Tensor]:
    _check_backward(grad_out, maps, reduce, normalize, weights)
    return [torch.empty_like(m) for m in maps]


def _setup_context(ctx, inputs, output) -> None:
    maps, _, reduce, normalize, weights = inputs
    ctx.save_for_backward(*maps)
    ctx.reduce = reduce
    ctx.normalize = normalize
    ctx.weights = weights


def _autograd_backward(ctx, grad_out: Tensor):
    maps = list(ctx.saved_tensors)
    grads = _backward_op(grad_out, maps, ctx.reduce, ctx.normalize, ctx.weights)
    return list(grads), None, None, None, None


_forward_op.register_autograd(_autograd_backward, setup_context=_setup_context)


def upsample_aggregate(
    maps: Sequence[Tensor],
    size: Sequence[int],
    reduce: str = "max",
    normalize: str = "minmax",
    weights: Sequence[float] | Tensor | None = None,
) -> Tensor:
    """Normalise per-layer maps, upsample them bilinearly to ``size`` and reduce over layers.

    Zoom-CAM's multi-layer fusion (Shi et al., ICPR 2020), with ``M_l = maps[l]``::

        N_l = (M_l - min_hw M_l) / (max_hw M_l - min_hw M_l + 1e-7)   # normalize="minmax"
        U_l = bilinear(N_l, size, align_corners=False)               # F.interpolate's taps and weights
        out = max_l U_l   (or mean_l, sum_l, sum_l weights[l] * U_l)

    Fused: the ``[B, H, W]`` output is written once; no per-layer full-size map is
    materialised. The per-sample min/max of every layer are found first (a small pass),
    then each output pixel samples the 4 source pixels of every layer.

    Args:
        maps: a non-empty list or tuple of at most 64 tensors ``(B, h_l, w_l)``, the same
            ``B``, dtype (float32, float64, float16 or bfloat16) and device; the sizes may
            differ per layer (smaller or larger than ``size``) and any strides are taken.
        size: ``(H, W)``, the output size, positive ints.
        reduce: ``"max"`` (element-wise maximum, Zoom-CAM), ``"mean"`` or ``"sum"``.
        normalize: ``"minmax"`` (per sample and layer; a constant map becomes exactly 0,
            never NaN; ``eps = 1e-7`` is fixed) or ``"none"``.
        weights: optional per-layer weights (a sequence of ``L`` floats or a 1-D tensor,
            read as constants: not differentiated) for a weighted sum; only with
            ``reduce="sum"``.

    Returns:
        ``(B, H, W)`` in the maps' dtype; accumulation is in float32 (float64 for float64
        maps). With ``"minmax"`` and ``"max"``/``"mean"`` the values lie in ``[0, 1)``.
        NaN in a layer propagates to every output pixel of that sample.

        Differentiable with respect to every map. ``"max"`` sends the gradient to the layer
        attaining the maximum at each output pixel, the **first in list order on ties**,
        compared in the accumulator dtype before rounding to the maps' dtype. The
        interpolated values are bit-identical on every backend and device (along W, then H,
        each product and sum rounded on its own, no fused multiply-add; the reference's
        ``upsample``), so the gradient goes to the same layer everywhere, near-ties included;
        ``F.interpolate`` agrees to the last bit or two, not bit for bit (its arithmetic
        varies with device, dtype and size; docs/ops.md, "The tie rule");
        the min/max of the normalisation share their gradient evenly among tied pixels
        (as autograd of ``amin``/``amax`` does); a constant map gets a zero gradient.
        On CUDA the backward adds with atomics by default, so its last bits may vary from
        run to run; under ``torch.use_deterministic_algorithms(True)`` it runs the Triton
        backend's gather backward (fixed order, bitwise reproducible), and a backward that
        has none (native or reference on CUDA without Triton) raises ``RuntimeError``
        (warns and runs with ``warn_only=True``).

    Raises:
        TypeError: ``maps`` not a list/tuple of tensors, an integer or complex dtype,
            mismatched dtypes, or weights that are not numbers.
        ValueError: an empty list, more than 64 layers, a rank other than 3, mismatched
            batch sizes or devices, an empty tensor, a bad ``size``, an unknown ``reduce`` or
            ``normalize``, weights of the wrong length, or weights with ``reduce != "sum"``.

    Example:
        >>> maps = [torch.rand(2, 7, 7), torch.rand(2, 14, 14), torch.rand(2, 28, 28)]
        >>> camfast.ops.upsample_aggregate(maps, (224, 224)).shape
        torch.Size([2, 224, 224])
    """
    # Types the op schema cannot take (a tuple of maps, a tensor of weights, a torch.Size)
    # are converted here; everything else is checked once, inside the op.
    maps = check_tensor_list("maps", maps, 3, "[B, h, w]", UA_MAX_LAYERS)
    if isinstance(size, (list, tuple)):  # numpy and other integer scalars become ints
        size = tuple(operator.index(s) if hasattr(s, "__index__") and not isinstance(s, (bool, torch.SymInt)) else s
                     for s in size)
    H, W = check_size2("size", size)
    check_choice("reduce", reduce, tuple(UA_REDUCES))
    check_choice("normalize", normalize, tuple(UA_NORMALIZES))
    if isinstance(weights, Tensor):
        if weights.dim() != 1:
            raise ValueError(f"weights must be a sequence of floats or a 1-D tensor, got shape {tuple(weights.shape)}")
        weights = [float(w) for w in weights.detach().cpu().tolist()]
    elif weights is not None:
        if not isinstance(weights, Sequence) or isinstance(weights, str):
            raise TypeError(f"weights must be a sequence of floats or a 1-D tensor, got {type(weights).__name__}")
        weights = list(weights)
        _check_weights(weights, len(maps), reduce)
        weights = [float(w) for w in weights]
    return _forward_op(maps, [H, W], reduce, normalize, weights)
