"""The table of ops that ``test_op_contract.py`` runs the op contract over: one ``OpSpec`` per op.

A row names the public function, its ``torch.ops.camfast`` op and its pure-PyTorch reference
(``camfast/ops/reference/``), how to build the op's arguments from a *case* (a dict of shapes
and options), the cases each contract test runs, and the bad inputs the op must reject.
Adding a row gives an op every contract test: reference match on every backend and dtype,
layouts, gradcheck, opcheck, ``torch.compile``, random shapes and bad input (see
``test_op_contract.py``). The input generators here are the ones the per-op test files use too.

Arguments are always built in full schema order, so ``spec.fn(*args)``, ``spec.op(*args)`` and
``spec.reference(*args)`` take the same tuple. The tensor arguments (a tensor or a list of
tensors, at ``spec.tensor_args``) are all differentiable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from helpers import assert_close, make_layout
from hypothesis import strategies as st
from torch import Tensor

from camfast.ops import (
    box_filter,
    grad_weighted_map,
    guided_filter,
    neighbour_stencil,
    thresholded_avg_pool2d,
    upsample_aggregate,
)
from camfast.ops.reference import box_filter as ref_box
from camfast.ops.reference import grad_weighted_map as ref_gwm
from camfast.ops.reference import guided_filter as ref_gf
from camfast.ops.reference import neighbour_stencil as ref_ns
from camfast.ops.reference import thresholded_avg_pool2d as ref_tap
from camfast.ops.reference import upsample_aggregate as ref_ua

Args = tuple
Case = Mapping[str, Any]


# ---------------------------------------------------------------- the row type
@dataclass(frozen=True)
class BadInput:
    """Arguments the op must reject with ``exc``, whose message starts with ``arg`` (the
    argument it names) and matches ``match``. ``direct``: ``torch.ops.camfast.<op>`` itself
    rejects them the same way (the arguments fit the op's schema, so they reach its checks)."""

    id: str
    make: Callable[[], Args]
    exc: type[Exception]
    arg: str
    match: str
    direct: bool = False


@dataclass(frozen=True)
class OpSpec:
    name: str                                   # torch.ops.camfast.<name> and <name>_backward
    fn: Callable[..., Tensor]                   # the public function
    reference: Callable[..., Tensor]            # the same signature, pure PyTorch
    make_args: Callable[[Case, torch.dtype, torch.device, int], Args]  # (case, dtype, device, seed)
    tensor_args: tuple[int, ...]                # positions of the (differentiable) tensor arguments
    cases: Mapping[str, Case]                   # reference match: odd and degenerate shapes, options
    layout_cases: Mapping[str, Case]            # layouts (LAYOUT_VARIANTS below)
    layouts: tuple[str, ...]                    # the LAYOUT_VARIANTS that apply
    gradcheck_cases: Mapping[str, Case]         # float64
    opcheck_cases: Mapping[str, Case]
    compile_cases: Mapping[str, Case]           # all in one compiled graph
    random_case: Callable[[bool], st.SearchStrategy]  # small=True: sizes for the Triton interpreter
    backward_args: Callable[[Args, Any], Args]  # (forward args, the op's output) -> the backward op's args
    bad_inputs: tuple[BadInput, ...]
    random_dtypes: Mapping[str, tuple[torch.dtype, ...]] = field(default_factory=lambda: {
        "native": (torch.float32, torch.float64, torch.bfloat16),
        "reference": (torch.float32, torch.float64, torch.bfloat16),
        "triton": (torch.float32,),
    })
    grad_keeps_channels_last: bool = False      # a channels-last input gets a channels-last gradient
    gradcheck_atol: float = 1e-8
    # fast_mode (random projections of the Jacobian) where a full one is too slow: (backend, device, case)
    gradcheck_fast: Callable[[str, torch.device, Case], bool] = lambda backend, device, case: False
    # (contract test, layout) -> reason, for known failures (strict xfail)
    known_failures: Mapping[tuple[str, str], str] = field(default_factory=dict)

    @property
    def op(self) -> torch._ops.OpOverload:
        return getattr(torch.ops.camfast, self.name).default

    @property
    def backward_op(self) -> torch._ops.OpOverload:
        return getattr(torch.ops.camfast, f"{self.name}_backward").default

    def args(self, case: Case, dtype: torch.dtype, device: torch.device | str, seed: int = 0) -> Args:
        """The arguments of ``case``, drawn with ``seed`` unless the case names its own."""
        return self.make_args(case, dtype, torch.device(device), case.get("seed", seed))


# ---------------------------------------------------------------- tensors inside arguments
def tensors(spec: OpSpec, args: Args) -> list[Tensor]:
    """The tensor arguments, lists flattened, in order."""
    out = []
    for i in spec.tensor_args:
        out.extend(args[i] if isinstance(args[i], (list, tuple)) else [args[i]])
    return out


def with_tensors(spec: OpSpec, args: Args, new: Sequence[Tensor]) -> Args:
    """``args`` with its tensors (in the order of :func:`tensors`) replaced by ``new``."""
    it = iter(new)
    args = list(args)
    for i in spec.tensor_args:
        args[i] = [next(it) for _ in args[i]] if isinstance(args[i], (list, tuple)) else next(it)
    return tuple(args)


def map_tensors(spec: OpSpec, args: Args, f: Callable[[Tensor], Tensor]) -> Args:
    return with_tensors(spec, args, [f(t) for t in tensors(spec, args)])


# ---------------------------------------------------------------- layouts
# id -> (layout of each tensor argument, cycled; dtype). Layouts as in helpers.make_layout, and
# "expanded": a stride-0 view (4-D: per-channel constants broadcast over H, W, as a caller
# holding per-channel weights passes them; 3-D maps: one map broadcast over the batch).
LAYOUT_VARIANTS = {
    "contiguous": (("contiguous",), torch.float32),
    "channels_last": (("channels_last",), torch.float32),
    "strided": (("strided",), torch.float32),
    "transposed": (("transposed",), torch.float32),
    "expanded": (("expanded",), torch.float32),
    "contiguous+expanded": (("contiguous", "expanded"), torch.float32),
    "channels_last-float16": (("channels_last",), torch.float16),
    "strided-bfloat16": (("strided",), torch.bfloat16),
    "channels_last+strided-float16": (("channels_last", "strided"), torch.float16),
    "contiguous+channels_last-bfloat16": (("contiguous", "channels_last"), torch.bfloat16),
    "strided+transposed+contiguous": (("strided", "transposed", "contiguous"), torch.float32),
}


def relayout(t: Tensor, layout: str) -> Tensor:
    """The same values as ``t`` (4-D ``[B, C, H, W]`` or 3-D ``[B, h, w]``) in another layout."""
    if layout == "expanded":
        return t[:, :, :1, :1].expand_as(t) if t.dim() == 4 else t[:1].expand_as(t)
    if t.dim() == 3:
        if layout == "channels_last":
            raise ValueError("channels_last needs 4-D tensors")
        return make_layout(t.unsqueeze(1), layout).squeeze(1)
    return make_layout(t, layout)


def relayout_args(spec: OpSpec, args: Args, layouts: Sequence[str]) -> Args:
    """``args`` with tensor ``i`` in ``layouts[i % len(layouts)]``."""
    return with_tensors(spec, args, [relayout(t, layouts[i % len(layouts)]) for i, t in enumerate(tensors(spec, args))])


# ---------------------------------------------------------------- the reference check
def check_against_reference(spec: OpSpec, args: Args, dtype: torch.dtype | None = None, seed: int = 1,
                            grads: bool = True) -> tuple[Tensor, list[Tensor] | None]:
    """``spec.fn(*args)`` (the current backend) against ``spec.reference(*args)``: the output,
    which must be contiguous, and (``grads``) the gradient of every tensor argument for one
    random ``grad_out``, against autograd of the reference forward (not the explicit
    reference backward, which the reference backend runs). The tolerance is the table's for
    ``dtype``; the reference gets copies taken before the op runs (a kernel that wrote into
    its inputs would show)."""
    ref_args = map_tensors(spec, args, lambda t: t.detach().clone().requires_grad_(grads))
    args = map_tensors(spec, args, lambda t: t.detach().requires_grad_(grads))
    out = spec.fn(*args)
    exp = spec.reference(*ref_args)
    dtype = dtype or out.dtype
    assert_close(out, exp, dtype, f"{spec.name} forward")
    assert out.is_contiguous(), f"{spec.name}: output strides {out.stride()} are not contiguous"
    if not grads:
        return out, None
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out)
    got = torch.autograd.grad(out, tensors(spec, args), grad_out)
    expected = torch.autograd.grad(exp, tensors(spec, ref_args), grad_out)
    for i, (g, e) in enumerate(zip(got, expected)):
        assert_close(g, e, dtype, f"{spec.name} d/d(tensor argument {i})")
    return out, list(got)


# ---------------------------------------------------------------- input generators
def _randn(shape, dtype, device, gen) -> Tensor:
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)


#: The grad_weighted_map modes whose channel weight takes the channel sum S_c = sum_hw A_c:
#: Grad-CAM++ multiplies G^3 by it, XGrad-CAM divides by it.
GWM_SUM_MODES = ("gradcampp", "xgradcam")


def gwm_inputs(shape, dtype, device, seed=0, mode="zoom") -> tuple[Tensor, Tensor]:
    """A ~ N(0,1), G ~ N(0,1)/sqrt(C): the channel sum, and so the map, is of order one.

    For the modes of ``GWM_SUM_MODES``, A ~ 1 + N(0,1)/2 instead: activations with a positive
    channel mean, as after a ReLU, a few of them negative. With a zero mean, S_c cancels to
    near 0 in some channel, where XGrad-CAM's w = P / (S + 1e-7) and Grad-CAM++'s
    a = G^2 / (2 G^2 + S G^3 + 1e-6) (singular at S G = -2) amplify the rounding of S by any
    factor: an ill-conditioning of the definitions, not a kernel error, that no tolerance
    table can absorb. test_grad_weighted_map.py checks negative and near-zero sums in float64."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(shape, generator=gen, dtype=torch.float64)
    g = torch.randn(shape, generator=gen, dtype=torch.float64) / math.sqrt(shape[1])
    if mode in GWM_SUM_MODES:
        a = 1 + a / 2
    return a.to(device=device, dtype=dtype), g.to(device=device, dtype=dtype)


def tap_input(shape, dtype, device, seed=0) -> Tensor:
    """Post-ReLU-like features with some negatives: N(0.3, 1)."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen, dtype=torch.float64) + 0.3).to(device=device, dtype=dtype)


def box_input(shape, dtype, device, seed=0) -> Tensor:
    return _randn(shape, dtype, device, torch.Generator().manual_seed(seed))


def gf_inputs(B, G, C, H, W, dtype, device, seed=0) -> tuple[Tensor, Tensor]:
    """A guide ``[B, G, H, W]`` and a source ``[B, C, H, W]``, uniform in [0, 1)."""
    gen = torch.Generator().manual_seed(seed)
    g = torch.rand((B, G, H, W), generator=gen, dtype=torch.float64)
    s = torch.rand((B, C, H, W), generator=gen, dtype=torch.float64)
    return g.to(device=device, dtype=dtype), s.to(device=device, dtype=dtype)


def _near_tie(maps, size, normalize, dtype) -> bool:
    """Whether the two best layers are within a rounding error at some pixel (but not equal)."""
    if len(maps) < 2:
        return False
    ups = torch.stack([ref_ua.upsample(ref_ua.normalize_map(m.double().cpu(), normalize), size) for m in maps])
    top = ups.topk(2, dim=0).values
    gap = top[0] - top[1]
    return bool(((gap > 0) & (gap < (1e-12 if dtype == torch.float64 else 1e-5))).any())


def ua_maps(shapes, B, dtype, device, seed=0, size=None, reduce="max", normalize="minmax") -> list[Tensor]:
    """``B``-sample maps N(0, 1) of the given sizes, redrawn while reduce="max" would meet a
    near-tie: there the gradient of a pixel goes to one layer, and a one-ulp difference between
    a kernel and torch would send it to another, a legitimate difference no tolerance should
    hide. Exact ties (both layers exactly 0 at a sampled minimum) are kept: every backend
    gives them to the first layer."""
    for attempt in range(20):
        gen = torch.Generator().manual_seed(seed + 1000 * attempt)
        maps = [_randn((B, *s), dtype, device, gen) for s in shapes]
        if reduce != "max" or size is None or not _near_tie(maps, size, normalize, dtype):
            return maps
    raise AssertionError("no tie-free draw found")  # pragma: no cover


def _shape_id(shape) -> str:
    return "x".join(map(str, shape))


# ---------------------------------------------------------------- grad_weighted_map
GWM_MODES = ("zoom", "gradcam", "layercam", "gradcampp", "xgradcam")
ODD_SHAPES = [(3, 37, 5, 9), (1, 1, 1, 1), (1, 5, 1, 1), (2, 1, 7, 3), (1, 16, 1, 13), (4, 3, 9, 1)]


def _gwm_args(case, dtype, device, seed) -> Args:
    return (*gwm_inputs(case["shape"], dtype, device, seed, case["mode"]), case["mode"])


def _gwm_cases(shape, seed=None):
    return {m: {"shape": shape, "mode": m, **({"seed": seed} if seed is not None else {})} for m in GWM_MODES}


def _gwm_random(small: bool):
    n = (2, 9) if small else (3, 24)
    hw = 9 if small else 12
    return st.fixed_dictionaries({
        "shape": st.tuples(st.integers(1, n[0]), st.integers(1, n[1]), st.integers(1, hw), st.integers(1, hw)),
        "mode": st.sampled_from(GWM_MODES),
    })


def _gwm_good(shape=(2, 3, 4, 5), dtype=torch.float32):
    return torch.randn(shape, dtype=dtype), torch.randn(shape, dtype=dtype)


GRAD_WEIGHTED_MAP = OpSpec(
    name="grad_weighted_map", fn=grad_weighted_map, reference=ref_gwm.forward, make_args=_gwm_args,
    tensor_args=(0, 1),
    cases={f"{m}-{_shape_id(s)}": {"shape": s, "mode": m} for s in ODD_SHAPES for m in GWM_MODES},
    layout_cases=_gwm_cases((2, 19, 6, 7)),
    layouts=("contiguous", "channels_last", "strided", "transposed", "contiguous+expanded",
             "channels_last+strided-float16", "contiguous+channels_last-bfloat16"),
    gradcheck_cases=_gwm_cases((2, 2, 3, 3), seed=3),
    opcheck_cases=_gwm_cases((2, 5, 3, 4)),
    compile_cases={k: v for k, v in _gwm_cases((2, 6, 5, 7)).items() if k in ("zoom", "gradcam", *GWM_SUM_MODES)},
    random_case=_gwm_random,
    backward_args=lambda args, out: (torch.randn_like(out), args[0], args[1], out, args[2]),
    grad_keeps_channels_last=True,
    bad_inputs=(
        BadInput("activation-list", lambda: ([1.0], _gwm_good()[1], "zoom"), TypeError, "activation",
                 "activation must be a torch.Tensor"),
        BadInput("gradient-none", lambda: (_gwm_good()[0], None, "zoom"), TypeError, "gradient",
                 "gradient must be a torch.Tensor", direct=True),
        BadInput("int", lambda: (_gwm_good()[0].int(), _gwm_good()[1].int(), "zoom"), TypeError, "activation",
                 "activation must have a floating dtype", direct=True),
        BadInput("gradient-long", lambda: (_gwm_good()[0], _gwm_good()[1].long(), "zoom"), TypeError, "gradient",
                 "gradient must have a floating dtype", direct=True),
        BadInput("complex", lambda: (_gwm_good()[0].to(torch.complex64), _gwm_good()[1], "zoom"), TypeError,
                 "activation", "activation must have a floating", direct=True),
        BadInput("dtypes-differ", lambda: (_gwm_good()[0], _gwm_good()[1].double(), "zoom"), TypeError, "gradient",
                 "gradient has dtype torch.float64", direct=True),
        BadInput("3d", lambda: (torch.randn(3, 4, 5), torch.randn(3, 4, 5), "zoom"), ValueError, "activation",
                 r"activation must have 4 dimensions \[B, C, H, W\]", direct=True),
        BadInput("gradient-3d", lambda: (_gwm_good()[0], torch.randn(2, 3, 4), "zoom"), ValueError, "gradient",
                 "gradient must have 4 dimensions", direct=True),
        BadInput("shapes-differ", lambda: (_gwm_good()[0], torch.randn(2, 3, 4, 6), "zoom"), ValueError, "gradient",
                 r"gradient has shape \(2, 3, 4, 6\) but activation", direct=True),
        BadInput("empty-batch", lambda: (torch.randn(0, 3, 4, 5), torch.randn(0, 3, 4, 5), "zoom"), ValueError,
                 "activation", "activation must not be empty", direct=True),
        BadInput("empty-height", lambda: (torch.randn(2, 3, 0, 5), torch.randn(2, 3, 0, 5), "zoom"), ValueError,
                 "activation", "activation must not be empty", direct=True),
        BadInput("mode", lambda: (*_gwm_good(), "hirescam"), ValueError, "mode", "mode must be one of", direct=True),
        BadInput("mode-int", lambda: (*_gwm_good(), 3), ValueError, "mode", "mode must be one of"),
        BadInput("devices-differ", lambda: (_gwm_good()[0], torch.randn(2, 3, 4, 5, device="meta"), "zoom"),
                 ValueError, "gradient", "gradient is on meta", direct=True),
        BadInput("sparse", lambda: (_gwm_good()[0].to_sparse(), _gwm_good()[1], "zoom"), TypeError, "activation",
                 "activation must be a dense", direct=True),
    ),
)


# ---------------------------------------------------------------- upsample_aggregate
# (reduce, normalize, weights) for three layers
UA_OPTIONS = [
    (reduce, normalize, weights)
    for normalize in ("minmax", "none")
    for reduce, weights in (("max", None), ("mean", None), ("sum", None), ("sum", (0.5, -2.0, 3.0)))
]
# (id, batch, layer sizes, output size)
UA_SHAPES = [
    ("up-mixed", 2, [(7, 5), (14, 9), (3, 3)], (37, 29)),
    ("down", 2, [(40, 33), (9, 61)], (37, 29)),  # downsampling (no antialias), and W-only down
    ("one-by-one", 1, [(1, 1), (4, 4), (1, 6)], (5, 3)),
    ("single-same-size", 3, [(6, 8)], (6, 8)),
    ("to-one-pixel", 2, [(5, 4), (3, 3)], (1, 1)),
]


def ua_option_id(option) -> str:
    return f"{option[0]}-{option[1]}" + ("-weighted" if option[2] else "")


def _ua_args(case, dtype, device, seed) -> Args:
    size = list(case["size"])
    maps = ua_maps(case["shapes"], case["B"], dtype, device, seed, size, case["reduce"], case["normalize"])
    weights = case.get("weights")
    return maps, size, case["reduce"], case["normalize"], None if weights is None else list(weights)


def _ua_case(shapes, B, size, option=("max", "minmax", None), seed=None) -> dict:
    case = {"shapes": shapes, "B": B, "size": size, "reduce": option[0], "normalize": option[1], "weights": option[2]}
    return case if seed is None else {**case, "seed": seed}


def _ua_random(small: bool):
    shape = st.tuples(st.integers(1, 13), st.integers(1, 13))

    def build(draw_b, shapes, size, option):
        reduce, normalize, weights = option
        if weights is not None:
            weights = (list(weights) * 2)[: len(shapes)]
        return _ua_case(shapes, draw_b, size, (reduce, normalize, weights))

    return st.builds(build, st.integers(1, 2 if small else 3), st.lists(shape, min_size=1, max_size=3 if small else 4),
                     shape, st.sampled_from(UA_OPTIONS))


def _ua_good(B=2, dtype=torch.float32):
    return [torch.randn(B, 3, 4, dtype=dtype), torch.randn(B, 5, 2, dtype=dtype)]


UPSAMPLE_AGGREGATE = OpSpec(
    name="upsample_aggregate", fn=upsample_aggregate, reference=ref_ua.forward, make_args=_ua_args,
    tensor_args=(0,),
    cases={
        **{f"max-minmax-{id}": _ua_case(shapes, B, size) for id, B, shapes, size in UA_SHAPES},
        **{ua_option_id(o): _ua_case([(7, 5), (14, 9), (3, 3)], 2, (23, 19), o, seed=2) for o in UA_OPTIONS},
    },
    layout_cases={
        "max": _ua_case([(7, 5), (14, 9), (3, 3)], 2, (17, 15), seed=3),
        "sum-weighted": _ua_case([(7, 5), (14, 9), (3, 3)], 2, (17, 15), ("sum", "minmax", (1.0, 2.0, -1.0)), seed=3),
    },
    layouts=("contiguous", "strided", "transposed", "expanded", "strided+transposed+contiguous", "strided-bfloat16"),
    gradcheck_cases={ua_option_id(o): _ua_case([(3, 4), (2, 2), (5, 3)], 2, (5, 6), o, seed=11) for o in UA_OPTIONS},
    opcheck_cases={
        "max": _ua_case([(3, 4), (5, 2)], 2, (6, 5)),
        "sum-none-weighted": _ua_case([(3, 4), (5, 2)], 2, (2, 3), ("sum", "none", (2.0, -1.0))),
        "mean-one-layer": _ua_case([(3, 4)], 2, (4, 4), ("mean", "minmax", None)),
    },
    compile_cases={
        "max": _ua_case([(4, 5), (7, 3)], 2, (13, 11), seed=12),
        "mean": _ua_case([(4, 5)], 2, (13, 11), ("mean", "minmax", None), seed=12),
    },
    random_case=_ua_random,
    random_dtypes={"native": (torch.float32, torch.float64), "reference": (torch.float32, torch.float64),
                   "triton": (torch.float64,)},
    backward_args=lambda args, out: (torch.randn_like(out), args[0], args[2], args[3], args[4]),
    gradcheck_atol=1e-7,
    gradcheck_fast=lambda backend, device, case: backend == "triton" and device.type == "cpu",
    bad_inputs=tuple(BadInput(*row) for row in [
        ("empty-list", lambda: ([], [4, 4], "max", "minmax", None), ValueError, "maps", "maps must not be empty",
         True),
        ("not-a-list", lambda: (torch.randn(2, 3, 4), [4, 4], "max", "minmax", None), TypeError, "maps",
         "maps must be a list or tuple of tensors"),
        ("not-a-tensor", lambda: ([_ua_good()[0], "x"], [4, 4], "max", "minmax", None), TypeError, "maps",
         r"maps\[1\] must be a torch.Tensor"),
        ("4d", lambda: ([torch.randn(2, 1, 3, 4)], [4, 4], "max", "minmax", None), ValueError, "maps",
         r"maps\[0\] must have 3 dimensions \[B, h, w\]", True),
        ("2d", lambda: ([_ua_good()[0], torch.randn(3, 4)], [4, 4], "max", "minmax", None), ValueError, "maps",
         r"maps\[1\] must have 3 dimensions", True),
        ("batch-differs", lambda: ([_ua_good()[0], torch.randn(3, 5, 2)], [4, 4], "max", "minmax", None), ValueError,
         "maps", r"maps\[1\] has batch size 3 but maps\[0\] has 2", True),
        ("dtypes-differ", lambda: ([_ua_good()[0], _ua_good()[1].double()], [4, 4], "max", "minmax", None), TypeError,
         "maps", r"maps\[1\] has dtype torch.float64", True),
        ("devices-differ", lambda: ([_ua_good()[0], torch.randn(2, 5, 2, device="meta")], [4, 4], "max", "minmax",
                                    None), ValueError, "maps", r"maps\[1\] is on meta", True),
        ("int", lambda: ([_ua_good()[0].int()], [4, 4], "max", "minmax", None), TypeError, "maps",
         r"maps\[0\] must have a floating dtype", True),
        ("long", lambda: ([_ua_good()[0], _ua_good()[1].long()], [4, 4], "max", "minmax", None), TypeError, "maps",
         r"maps\[1\] must have a floating dtype", True),
        ("empty-map", lambda: ([torch.randn(2, 0, 4)], [4, 4], "max", "minmax", None), ValueError, "maps",
         r"maps\[0\] must not be empty", True),
        ("empty-batch", lambda: ([torch.randn(0, 3, 4)], [4, 4], "max", "minmax", None), ValueError, "maps",
         r"maps\[0\] must not be empty", True),
        ("65-layers", lambda: ([torch.randn(2, 2, 2)] * 65, [4, 4], "max", "minmax", None), ValueError, "maps",
         "maps has 65 entries; at most 64", True),
        ("size-zero", lambda: (_ua_good(), [4, 0], "max", "minmax", None), ValueError, "size",
         "size must be a pair of positive ints", True),
        ("size-negative", lambda: (_ua_good(), [4, -2], "max", "minmax", None), ValueError, "size",
         "size must be a pair of positive ints", True),
        ("size-one", lambda: (_ua_good(), [4], "max", "minmax", None), ValueError, "size",
         "size must be a pair of positive ints", True),
        ("size-three", lambda: (_ua_good(), [4, 4, 4], "max", "minmax", None), ValueError, "size",
         "size must be a pair of positive ints", True),
        ("size-float", lambda: (_ua_good(), (4.0, 4), "max", "minmax", None), ValueError, "size",
         "size must be a pair of positive ints"),
        ("size-int", lambda: (_ua_good(), 16, "max", "minmax", None), ValueError, "size",
         "size must be a pair of positive ints"),
        ("reduce", lambda: (_ua_good(), [4, 4], "min", "minmax", None), ValueError, "reduce",
         "reduce must be one of 'max', 'mean', 'sum'", True),
        ("normalize", lambda: (_ua_good(), [4, 4], "max", "zscore", None), ValueError, "normalize",
         "normalize must be one of 'minmax', 'none'", True),
        ("weights-short", lambda: (_ua_good(), [4, 4], "sum", "minmax", [1.0]), ValueError, "weights",
         "weights has 1 entries but maps has 2", True),
        ("weights-tensor-long", lambda: (_ua_good(), [4, 4], "sum", "minmax", torch.ones(3)), ValueError, "weights",
         "weights has 3 entries"),
        ("weights-with-max", lambda: (_ua_good(), [4, 4], "max", "minmax", [1.0, 2.0]), ValueError, "weights",
         "weights are only used with reduce='sum'", True),
        ("weights-with-mean", lambda: (_ua_good(), [4, 4], "mean", "minmax", [1.0, 2.0]), ValueError, "weights",
         "weights are only used with reduce='sum'", True),
        ("weights-strings", lambda: (_ua_good(), [4, 4], "sum", "minmax", ["a", "b"]), TypeError, "weights",
         "weights must be a sequence of floats"),
        ("weights-2d", lambda: (_ua_good(), [4, 4], "sum", "minmax", torch.ones(2, 1)), ValueError, "weights",
         "weights must be a sequence of floats or a 1-D"),
        ("weights-nan", lambda: (_ua_good(), [4, 4], "sum", "minmax", [1.0, float("nan")]), ValueError, "weights",
         "weights must be finite", True),
    ]),
)


# ---------------------------------------------------------------- box_filter
BOX_SHAPES = [(2, 3, 9, 11), (1, 1, 1, 1), (1, 2, 1, 7), (3, 1, 6, 1), (1, 4, 17, 5)]
BOX_RADII = [0, 1, 3, 20]


def _box_args(case, dtype, device, seed) -> Args:
    return box_input(case["shape"], dtype, device, seed), case["radius"]


def _box_random(small: bool):
    return st.fixed_dictionaries({
        "shape": st.tuples(st.integers(1, 2), st.integers(1, 4), st.integers(1, 10), st.integers(1, 10)),
        "radius": st.integers(0, 12),
    })


def _x(*shape):
    return torch.rand(*(shape or (1, 2, 3, 4)))


BOX_FILTER = OpSpec(
    name="box_filter", fn=box_filter, reference=ref_box.forward, make_args=_box_args, tensor_args=(0,),
    cases={f"r{r}-{_shape_id(s)}": {"shape": s, "radius": r} for s in BOX_SHAPES for r in BOX_RADII},
    layout_cases={"r2": {"shape": (2, 5, 8, 7), "radius": 2}},
    layouts=("contiguous", "channels_last", "strided", "transposed", "expanded", "channels_last-float16",
             "strided-bfloat16"),
    gradcheck_cases={f"r{r}": {"shape": (1, 2, 5, 4), "radius": r} for r in (1, 3)},
    opcheck_cases={"r2": {"shape": (2, 3, 5, 6), "radius": 2}, "r7": {"shape": (2, 3, 5, 6), "radius": 7}},
    compile_cases={f"r{r}": {"shape": (2, 3, 9, 8), "radius": r} for r in (2, 5)},
    random_case=_box_random,
    backward_args=lambda args, out: (torch.randn_like(out), args[1]),
    gradcheck_fast=lambda backend, device, case: backend == "triton",
    bad_inputs=(
        BadInput("radius-negative", lambda: (_x(), -1), ValueError, "radius", "radius must be an int >= 0", True),
        BadInput("radius-float", lambda: (_x(), 1.5), TypeError, "radius", "radius must be an int", True),
        BadInput("radius-bool", lambda: (_x(), True), TypeError, "radius", "radius must be an int, got bool", True),
        BadInput("3d", lambda: (_x()[0], 1), ValueError, "x", r"x must have 4 dimensions \[B, C, H, W\]", True),
        BadInput("long", lambda: (_x().long(), 1), TypeError, "x", "x must have a floating dtype", True),
        BadInput("empty", lambda: (_x()[:, :, :0], 1), ValueError, "x", "x must not be empty", True),
        BadInput("numpy", lambda: (_x().numpy(), 1), TypeError, "x", "x must be a torch.Tensor"),
    ),
)


# ---------------------------------------------------------------- guided_filter
def _gf_args(case, dtype, device, seed) -> Args:
    g, s = gf_inputs(*case["shape"], dtype, device, seed)
    return g, s, case.get("radius", 3), case.get("eps", 0.1), case.get("subsample", 1), case.get("border", "truncate")


def _gf_random(small: bool):
    def build(B, G, C, H, W, radius, eps, subsample, border):
        h, w = ref_gf.low_res_size(H, W, subsample)
        rr = ref_gf.low_res_radius(radius, subsample)
        if border == "reflect" and (rr >= h or rr >= w):
            border = "truncate"  # reflect needs a radius smaller than the (subsampled) image
        return {"shape": (B, G, C, H, W), "radius": radius, "eps": eps, "subsample": subsample, "border": border}

    hw = st.integers(1, 9 if small else 12)
    return st.builds(build, st.integers(1, 2), st.sampled_from([1, 3]), st.integers(1, 3), hw, hw,
                     st.integers(0, 5), st.sampled_from([0.01, 0.1]), st.integers(1, 3),
                     st.sampled_from(["truncate", "reflect"]))


def _gf_good():
    return gf_inputs(2, 3, 2, 5, 6, torch.float32, "cpu")


def _gf_bad(id, change, exc, arg, match, direct=False) -> BadInput:
    """``change(guide, src)`` -> the arguments after the guide and src defaults are changed."""
    return BadInput(id, lambda: change(*_gf_good()), exc, arg, match, direct)


GUIDED_FILTER = OpSpec(
    name="guided_filter", fn=guided_filter, reference=ref_gf.forward, make_args=_gf_args, tensor_args=(0, 1),
    cases={
        **{f"G{G}-s{sub}-{border}": {"shape": (2, G, 3, 13, 10), "subsample": sub, "border": border}
           for G in (1, 3) for sub in (1, 2, 3) for border in ("truncate", "reflect")},
        "3x3x5x9x11-r2": {"shape": (3, 3, 5, 9, 11), "radius": 2},
        "1x1-pixel-r1": {"shape": (1, 1, 1, 1, 1), "radius": 1},
        "1x3x2x1x6-row-reflect": {"shape": (1, 3, 2, 1, 6), "radius": 0, "border": "reflect"},
    },
    layout_cases={"G3-r2": {"shape": (2, 3, 2, 8, 9), "radius": 2}},
    layouts=("contiguous", "channels_last", "strided", "transposed", "expanded", "channels_last+strided-float16",
             "contiguous+channels_last-bfloat16"),
    gradcheck_cases={
        f"G{G}-r{r}-s{sub}-{border}": {"shape": (1, G, 2, 3, 4), "radius": r, "eps": 0.05, "subsample": sub,
                                        "border": border, "seed": G}
        for G in (1, 3) for r, sub, border in ((1, 1, "truncate"), (2, 2, "truncate"), (1, 1, "reflect"))
    },
    opcheck_cases={
        "r2-s1-truncate": {"shape": (2, 3, 2, 5, 6), "radius": 2},
        "r1-s2-reflect": {"shape": (2, 3, 2, 5, 6), "radius": 1, "subsample": 2, "border": "reflect"},
    },
    compile_cases={"G3-r2": {"shape": (2, 3, 2, 9, 8), "radius": 2}},
    random_case=_gf_random,
    backward_args=lambda args, out: (torch.randn_like(out), *args, True, True),
    gradcheck_atol=1e-7,
    # full Jacobians on the default setting (the native transpose for src), fast mode elsewhere
    gradcheck_fast=lambda backend, device, case: backend != "native" or (
        case["subsample"], case["border"]) != (1, "truncate"),
    bad_inputs=(
        _gf_bad("eps-zero", lambda g, s: (g, s, 1, 0.0, 1, "truncate"), ValueError, "eps", "eps must be a finite float > 0", True),
        _gf_bad("eps-negative", lambda g, s: (g, s, 1, -1.0, 1, "truncate"), ValueError, "eps", "eps must be", True),
        _gf_bad("eps-nan", lambda g, s: (g, s, 1, float("nan"), 1, "truncate"), ValueError, "eps", "eps must be", True),
        _gf_bad("radius-negative", lambda g, s: (g, s, -1, 0.1, 1, "truncate"), ValueError, "radius",
                "radius must be an int >= 0", True),
        _gf_bad("radius-float", lambda g, s: (g, s, 1.0, 0.1, 1, "truncate"), TypeError, "radius", "radius must be an int",
                True),
        _gf_bad("radius-bool", lambda g, s: (g, s, True, 0.1, 1, "truncate"), TypeError, "radius",
                "radius must be an int, got bool", True),
        _gf_bad("subsample-bool", lambda g, s: (g, s, 1, 0.1, True, "truncate"), TypeError, "subsample",
                "subsample must be an int, got bool", True),
        _gf_bad("eps-bool", lambda g, s: (g, s, 1, True, 1, "truncate"), TypeError, "eps", "eps must be a float, got bool",
                True),
        _gf_bad("subsample-zero", lambda g, s: (g, s, 1, 0.1, 0, "truncate"), ValueError, "subsample",
                "subsample must be an int >= 1", True),
        _gf_bad("border", lambda g, s: (g, s, 1, 0.1, 1, "zeros"), ValueError, "border", "border must be one of", True),
        _gf_bad("reflect-radius", lambda g, s: (g, s, 6, 0.1, 1, "reflect"), ValueError, "border",
                "border='reflect' needs a radius smaller than the image", True),
        _gf_bad("guide-2-channels", lambda g, s: (g[:, :2], s, 1, 0.1, 1, "truncate"), ValueError, "guide",
                "guide must have 1 or 3 channels", True),
        _gf_bad("batch-differs", lambda g, s: (g, s[:1], 1, 0.1, 1, "truncate"), ValueError, "src",
                "src has shape .* batch, height and width must match", True),
        _gf_bad("height-differs", lambda g, s: (g, s[:, :, 1:], 1, 0.1, 1, "truncate"), ValueError, "src",
                "src has shape .* batch, height and width must match", True),
        _gf_bad("dtypes-differ", lambda g, s: (g, s.double(), 1, 0.1, 1, "truncate"), TypeError, "src",
                "src has dtype torch.float64 but guide has torch.float32", True),
        _gf_bad("guide-3d", lambda g, s: (g[0], s, 1, 0.1, 1, "truncate"), ValueError, "guide",
                r"guide must have 4 dimensions", True),
        _gf_bad("src-int", lambda g, s: (g, s.int(), 1, 0.1, 1, "truncate"), TypeError, "src",
                "src must have a floating dtype", True),
    ),
)


# ---------------------------------------------------------------- thresholded_avg_pool2d
def _tap_args(case, dtype, device, seed) -> Args:
    return tap_input(case["shape"], dtype, device, seed), case["theta"]


def _tap_random(small: bool):
    n = (2, 9) if small else (3, 80)
    hw = 9 if small else 12
    return st.fixed_dictionaries({
        "shape": st.tuples(st.integers(1, n[0]), st.integers(1, n[1]), st.integers(1, hw), st.integers(1, hw)),
        "theta": st.sampled_from([0.0, 0.1, 0.5] if small else [0.0, 0.05, 0.1, 0.5, 1.0]),
    })


def _tap_bad_theta(id, theta, exc) -> BadInput:
    return BadInput(f"theta-{id}", lambda: (torch.rand(1, 2, 3, 3), theta), exc, "theta", "theta must be a float in",
                    direct=exc is ValueError or isinstance(theta, bool))


THRESHOLDED_AVG_POOL2D = OpSpec(
    name="thresholded_avg_pool2d", fn=thresholded_avg_pool2d, reference=lambda x, theta: ref_tap.forward(x, theta)[0],
    make_args=_tap_args, tensor_args=(0,),
    cases={
        **{f"theta0.1-{_shape_id(s)}": {"shape": s, "theta": 0.1} for s in ODD_SHAPES},
        **{f"theta{t}-3x37x5x9": {"shape": (3, 37, 5, 9), "theta": t} for t in (0.0, 0.5, 1.0)},
    },
    layout_cases={"theta0.1-70-channels": {"shape": (2, 70, 6, 7), "theta": 0.1}},  # > one 64-channel block
    layouts=("contiguous", "channels_last", "strided", "transposed", "expanded", "channels_last-float16",
             "strided-bfloat16"),
    gradcheck_cases={"theta0.1": {"shape": (1, 2, 3, 4), "theta": 0.1, "seed": 3}},
    opcheck_cases={"theta0.1": {"shape": (2, 5, 3, 4), "theta": 0.1}},
    compile_cases={"theta0.1": {"shape": (2, 6, 5, 7), "theta": 0.1}},
    random_case=_tap_random,
    backward_args=lambda args, out: (torch.randn_like(out[0]), args[0], out[1], out[2]),
    grad_keeps_channels_last=True,
    bad_inputs=(
        *(_tap_bad_theta(id, theta, exc) for id, theta, exc in [
            ("negative", -0.1, ValueError), ("above-one", 1.5, ValueError), ("nan", float("nan"), ValueError),
            ("bool", True, TypeError), ("str", "0.1", TypeError), ("none", None, TypeError)]),
        BadInput("3d", lambda: (torch.rand(2, 3, 4), 0.1), ValueError, "x", r"x must have 4 dimensions", True),
        BadInput("5d", lambda: (torch.rand(1, 2, 3, 3, 1), 0.1), ValueError, "x", r"x must have 4 dimensions", True),
        BadInput("empty", lambda: (torch.rand(0, 2, 3, 3), 0.1), ValueError, "x", "x must not be empty", True),
        BadInput("long", lambda: (torch.ones(1, 2, 3, 3, dtype=torch.int64), 0.1), TypeError, "x",
                 "x must have a floating dtype", True),
        BadInput("list", lambda: ([[1.0]], 0.1), TypeError, "x", "x must be a torch.Tensor"),
        BadInput("complex", lambda: (torch.ones(1, 2, 3, 3, dtype=torch.complex64), 0.1), TypeError, "x",
                 "x must have a floating dtype", True),
    ),
)


# ---------------------------------------------------------------- neighbour_stencil
#: How a case's coefficients ``a``, ``w``, ``c`` are stored: "full" (three tensors of x's shape),
#: or stride-0 views of x's shape as callers pass constants and fields: "scalar" (one value, all
#: strides 0), "per-image" (a [B, 1, H, W] field broadcast over the channels), "per-channel"
#: ([1, C, 1, 1] broadcast over the batch and the plane), "shared-field" (one [1, 1, H, W]
#: field for every sample and channel, as ROAD's neighbour count), "mixed" (a full, w scalar,
#: c per-image).
NS_COEFS = ("full", "scalar", "per-image", "per-channel", "shared-field", "mixed")
NS_SHAPES = [(2, 3, 9, 11), (1, 1, 1, 1), (1, 2, 1, 7), (3, 1, 6, 1), (1, 4, 17, 5), (2, 2, 2, 2), (1, 1, 3, 3)]
_NS_MIXED = ("full", "scalar", "per-image")


def ns_coef(kind: str, shape, dtype, device, gen) -> Tensor:
    """A coefficient ~ N(0, 1) of ``shape`` stored as ``kind`` (see :data:`NS_COEFS`)."""
    B, C, H, W = shape
    stored = {"full": shape, "scalar": (1, 1, 1, 1), "per-image": (B, 1, H, W), "per-channel": (1, C, 1, 1),
              "shared-field": (1, 1, H, W)}[kind]
    return _randn(stored, dtype, device, gen).expand(shape)


def ns_inputs(shape, dtype, device, seed=0, coef="full") -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x, a, w, c)``, each ~ N(0, 1) (drawn in float64, then cast); ``coef`` as in
    :data:`NS_COEFS`. ``K x`` is then of order 6 (its weights' norm), the output too."""
    gen = torch.Generator().manual_seed(seed)
    x = _randn(shape, dtype, device, gen)
    kinds = _NS_MIXED if coef == "mixed" else (coef,) * 3
    return (x, *(ns_coef(kind, shape, dtype, device, gen) for kind in kinds))


def _ns_args(case, dtype, device, seed) -> Args:
    return ns_inputs(case["shape"], dtype, device, seed, case.get("coef", "full"))


def _ns_random(small: bool):
    hw = st.integers(1, 9 if small else 12)
    return st.fixed_dictionaries({
        "shape": st.tuples(st.integers(1, 2), st.integers(1, 3 if small else 5), hw, hw),
        "coef": st.sampled_from(NS_COEFS),
    })


def _ns_good(shape=(1, 2, 3, 4), dtype=torch.float32) -> list[Tensor]:
    return [torch.randn(shape, dtype=dtype) for _ in range(4)]


def _ns_bad(id, change, exc, arg, match, direct=True) -> BadInput:
    """``change(x, a, w, c)`` -> the arguments after good defaults are changed."""
    return BadInput(id, lambda: change(*_ns_good()), exc, arg, match, direct)


NEIGHBOUR_STENCIL = OpSpec(
    name="neighbour_stencil", fn=neighbour_stencil, reference=ref_ns.forward, make_args=_ns_args,
    tensor_args=(0, 1, 2, 3),
    cases={
        **{f"full-{_shape_id(s)}": {"shape": s, "coef": "full"} for s in NS_SHAPES},
        **{f"{k}-{_shape_id(s)}": {"shape": s, "coef": k} for k in NS_COEFS[1:] for s in ((2, 3, 9, 11), (1, 2, 1, 7))},
    },
    layout_cases={"full": {"shape": (2, 5, 8, 7), "coef": "full"}},
    layouts=tuple(LAYOUT_VARIANTS),  # four 4-D tensors: every variant applies
    # full tensors only: gradcheck perturbs its inputs in place, which a stride-0 view cannot take
    gradcheck_cases={
        "full-1x2x4x5": {"shape": (1, 2, 4, 5), "seed": 3},
        "full-1x1x1x3-row": {"shape": (1, 1, 1, 3), "seed": 4},
        "full-2x1x3x1-column": {"shape": (2, 1, 3, 1), "seed": 5},
        "full-1x1x1x1": {"shape": (1, 1, 1, 1), "seed": 6},
    },
    opcheck_cases={"full": {"shape": (2, 3, 5, 6)}, "full-one-row": {"shape": (1, 2, 1, 6)}},
    compile_cases={"full": {"shape": (2, 3, 9, 8)}, "full-one-column": {"shape": (1, 2, 7, 1)}},
    random_case=_ns_random,
    backward_args=lambda args, out: (torch.randn_like(out), args[0], args[1], args[2]),
    gradcheck_fast=lambda backend, device, case: backend == "triton" and device.type == "cpu",
    bad_inputs=(
        _ns_bad("x-3d", lambda x, a, w, c: (x[0], a, w, c), ValueError, "x",
                r"x must have 4 dimensions \[B, C, H, W\]"),
        _ns_bad("x-5d", lambda x, a, w, c: (x[None], a, w, c), ValueError, "x", r"x must have 4 dimensions"),
        _ns_bad("a-3d", lambda x, a, w, c: (x, a[0], w, c), ValueError, "a",
                r"a must have 4 dimensions \[B, C, H, W\]"),
        _ns_bad("a-shape", lambda x, a, w, c: (x, torch.randn(1, 2, 3, 5), w, c), ValueError, "a",
                r"a has shape \(1, 2, 3, 5\) but x has \(1, 2, 3, 4\); they must match"),
        _ns_bad("c-broadcastable-shape", lambda x, a, w, c: (x, a, w, c[:, :1]), ValueError, "c",
                r"c has shape \(1, 1, 3, 4\) but x has \(1, 2, 3, 4\)"),  # pass t.expand_as(x) instead
        _ns_bad("w-dtype", lambda x, a, w, c: (x, a, w.double(), c), TypeError, "w",
                "w has dtype torch.float64 but x has torch.float32; they must match"),
        _ns_bad("a-float16", lambda x, a, w, c: (x.half(), a, w.half(), c.half()), TypeError, "a",
                "a has dtype torch.float32 but x has torch.float16"),
        _ns_bad("c-numpy", lambda x, a, w, c: (x, a, w, c.numpy()), TypeError, "c",
                "c must be a torch.Tensor, got ndarray", direct=False),
        _ns_bad("x-list", lambda x, a, w, c: (x.tolist(), a, w, c), TypeError, "x", "x must be a torch.Tensor",
                direct=False),
        _ns_bad("w-none", lambda x, a, w, c: (x, a, None, c), TypeError, "w", "w must be a torch.Tensor, got NoneType",
                direct=False),
        _ns_bad("x-long", lambda x, a, w, c: (x.long(), a, w, c), TypeError, "x", "x must have a floating dtype"),
        _ns_bad("all-long", lambda x, a, w, c: (x.long(), a.long(), w.long(), c.long()), TypeError, "x",
                "x must have a floating dtype"),
        _ns_bad("c-int", lambda x, a, w, c: (x, a, w, c.int()), TypeError, "c", "c must have a floating dtype"),
        _ns_bad("w-complex", lambda x, a, w, c: (x, a, w.to(torch.complex64), c), TypeError, "w",
                "w must have a floating dtype"),
        _ns_bad("x-empty", lambda x, a, w, c: (x[:, :, :0], a[:, :, :0], w[:, :, :0], c[:, :, :0]), ValueError, "x",
                "x must not be empty"),
        _ns_bad("c-empty", lambda x, a, w, c: (x, a, w, c[:0]), ValueError, "c", "c must not be empty"),
        _ns_bad("a-meta", lambda x, a, w, c: (x, a.to("meta"), w, c), ValueError, "a",
                "a is on meta but x is on cpu; they must share a device"),
        _ns_bad("c-sparse", lambda x, a, w, c: (x, a, w, c.to_sparse()), TypeError, "c", "c must be a dense"),
    ),
)


SPECS = {s.name: s for s in (GRAD_WEIGHTED_MAP, UPSAMPLE_AGGREGATE, BOX_FILTER, GUIDED_FILTER, THRESHOLDED_AVG_POOL2D,
                              NEIGHBOUR_STENCIL)}
