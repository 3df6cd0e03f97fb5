"""Faithfulness metrics: the model itself judges a map (METHODS.md "Faithfulness metrics").

No labels are needed: each metric perturbs the model's input according to the map and reads
the class score the model then gives. Everything runs batched on the input's device, under
``torch.no_grad``; :class:`Faithfulness` accumulates running means over a dataset and
:func:`evaluate` streams an iterator of batches through a registered CAM method.

Notation: ``x`` the model's input ``(B, C, H, W)`` (already normalised, as the model takes it),
``M`` a map ``(B, h, w)`` in [0, 1] (bilinearly resized to ``H x W`` when smaller, as torchcam
does), ``c`` the class of each image (default its top class), ``s(.)`` the class score:
the softmax probability (``score="softmax"``, the default) or the logit (``score="logit"``).

* **Average Drop / Increase in Confidence** (Chattopadhay et al. 2018; torchcam's
  ``ClassificationMetric``): ``Y = s(x)``, ``O = s(x * M)``;
  ``AD = mean(max(0, Y - O) / (Y + 1e-7)) * 100``, ``IC = mean(O > Y) * 100``
  (:func:`average_drop_increase`; the ``1e-7`` is torchcam's).
* **Deletion / insertion** (Petsiuk et al., RISE 2018; torchcam's ``DeletionInsertionMetric``):
  pixels ranked by decreasing ``M`` (stable order), ``n = ceil(HW / steps)`` per step, the
  points ``k = 0, n, 2n, ..., HW``; deletion replaces the ``k`` first pixels (every channel) by
  a baseline, insertion puts them from ``x`` onto a baseline; each curve ``s(.)`` against
  ``k / HW``, its area by the trapezoidal rule (:func:`deletion_insertion`). Baselines:
  ``"zeros"``, ``"blur"`` (Gaussian, kernel 11, sigma 5, as RISE's code; edges replicated),
  ``"mean"`` (each image's channel means), a tensor or a callable. Defaults: deletion to
  zeros, insertion from the blurred image (RISE).
* **ROAD** (Rong et al. 2022; pytorch-grad-cam's ``ROADMostRelevantFirst`` /
  ``ROADLeastRelevantFirst``): for each percentage ``p`` of :data:`PERCENTILES` (10..90),
  MoRF removes the ``p`` % most relevant pixels (``M >= q``, ``q`` the ``(100 - p)``-th
  percentile of ``M``, linear interpolation as ``numpy.percentile``), LeRF the ``p`` % least
  relevant (``1 - M >= `` the ``(100 - p)``-th percentile of ``1 - M``); removed pixels are
  filled by noisy linear imputation (:func:`noisy_linear_imputation`) and the metric is the
  score change ``s(imputed) - s(x)`` (pytorch-grad-cam's sign: MoRF falls below zero for a
  faithful map, LeRF stays near zero). Reported per percentage, averaged over them, and
  combined as ``(LeRF - MoRF) / 2`` (pytorch-grad-cam's ``ROADCombined``; higher is better).
  pytorch-grad-cam's ``percentile=q`` is our ``p = 100 - q`` (it keeps ``M < q``-th
  percentile); over 10..90 the two sets are the same.

Noisy linear imputation: every removed pixel ``i`` becomes the weighted mean of its 8
neighbours inside the image (weights 1/6 for the 4 direct, 1/12 for the 4 diagonal ones;
removed neighbours count with their own imputed values), i.e. the linear system
``d_i u_i - sum_{j removed} w_ij u_j = sum_{k kept} w_ik x_k`` (``d_i`` the weights of the
in-image neighbours), then ``noise * N(0, 1)`` is added to the removed pixels. The system is
symmetric positive definite (when any pixel is kept); pytorch-grad-cam solves it per image on
the CPU with a sparse LU factorisation; here every (image, percentage, channel) system is
solved at once on the device (on the CPU in cache-sized groups of planes) by conjugate
gradients, each step one pass of ``camfast::neighbour_stencil``, preconditioned with one geometric
multigrid V-cycle (:class:`_Multigrid`, symmetric positive definite: the solution is the same,
only reached in tens of iterations instead of hundreds) and started from a pyramid fill (coarse
means of the kept pixels), to a relative residual ``tol``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camfast.ops.neighbour_stencil import unchecked_kernel

__all__ = [
    "BASELINES", "METRICS", "PERCENTILES", "SCORES", "Curves", "DropIncrease", "Faithfulness", "ROADResult",
    "average_drop_increase", "baseline_image", "check_int", "check_percentiles", "class_scores", "deletion_insertion", "evaluate",
    "noisy_linear_imputation", "removal_masks", "road",
]

SCORES = ("softmax", "logit")
BASELINES = ("zeros", "blur", "mean")
PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
#: what :class:`Faithfulness` can compute: Average Drop / Increase in Confidence (one pair),
#: deletion / insertion (one pair), ROAD (MoRF, LeRF and combined)
METRICS = ("drop-increase", "deletion-insertion", "road")

Baseline = str | Tensor | Callable[[Tensor], Tensor]


# ------------------------------------------------------------------------------ arguments
def _check_x(x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[0] == 0 or min(x.shape[-2:]) < 1:
        raise ValueError(f"x must be a non-empty batch of images (B, C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating tensor, got {x.dtype}")
    return x


def _check_maps(maps: object, x: Tensor) -> Tensor:
    """``maps`` as ``(B, H, W)`` float32 in [0, 1] at ``x``'s size, or a ValueError naming it."""
    if not isinstance(maps, Tensor):
        raise TypeError(f"maps must be a torch.Tensor, got {type(maps).__name__}")
    if maps.dim() == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    B, _, H, W = x.shape
    if maps.dim() != 3 or maps.shape[0] != B:
        raise ValueError(f"maps must be (B, h, w) with B = {B} (one map per image of x, shape {tuple(x.shape)}), "
                         f"got shape {tuple(maps.shape)}")
    if maps.shape[-2] > H or maps.shape[-1] > W or min(maps.shape[-2:]) < 1:
        raise ValueError(f"maps must not be larger than x's {H}x{W}, got {tuple(maps.shape[-2:])}")
    if maps.is_complex() or maps.dtype == torch.bool or not maps.is_floating_point():
        raise TypeError(f"maps must be a floating tensor, got {maps.dtype}")
    maps = maps.detach().to(device=x.device, dtype=torch.float32)
    if not bool(torch.isfinite(maps).all()):
        bad = (~torch.isfinite(maps)).flatten(1).any(1).nonzero().flatten().tolist()
        raise ValueError(f"maps hold NaN or infinite values (images {bad[:8]}); normalise them first")
    lo, hi = float(maps.min()), float(maps.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(f"maps must be in [0, 1], got values in [{lo:.4g}, {hi:.4g}] (camfast.normalize scales a map)")
    maps = maps.clamp(0, 1)
    if tuple(maps.shape[-2:]) != (H, W):
        maps = F.interpolate(maps[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0]
    return maps


def _check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def check_int(name: str, value: object, low: int = 1) -> int:
    """``value`` as an int ``>= low``, else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def check_percentiles(percentiles: object) -> tuple[float, ...]:
    """Percentages of pixels removed, each strictly between 0 and 100 (a ValueError naming ``percentiles``)."""
    if isinstance(percentiles, (str, bytes)) or not isinstance(percentiles, Iterable):
        raise TypeError(f"percentiles must be a sequence of numbers in (0, 100), got {percentiles!r}")
    out = []
    for p in percentiles:
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not math.isfinite(p) or not 0 < p < 100:
            raise ValueError(f"percentiles must be numbers strictly between 0 and 100 (percent of pixels removed), "
                             f"got {p!r}")
        out.append(float(p))
    if not out:
        raise ValueError("percentiles must not be empty")
    return tuple(out)


def _targets(model: nn.Module, x: Tensor, target: Any, logits: Tensor | None, output_fn, batch_size: int
             ) -> tuple[Tensor, Tensor]:
    """``(class indices (B,), logits (B, K))``; the logits of ``x`` are computed when not given."""
    from camfast.methods.targets import class_names_of, target_indices

    if logits is None:
        logits = _forward(model, x, output_fn, batch_size)
    elif not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != x.shape[0]:
        raise ValueError(f"logits must be the model's (B, num_classes) output for x, got "
                         f"{getattr(logits, 'shape', type(logits).__name__)}")
    idx = target_indices(logits, target, "camfast.evaluation.faithfulness", class_names_of(model))
    return idx.to(x.device), logits


def _forward(model: nn.Module, inputs: Tensor, output_fn, batch_size: int) -> Tensor:
    """The model's ``(N, K)`` scores for ``inputs``, ``batch_size`` at a time, without gradients."""
    from camfast.methods.engine import logits_of

    outs = []
    with torch.no_grad():
        for s in range(0, inputs.shape[0], batch_size):
            outs.append(logits_of(model(inputs[s:s + batch_size]), output_fn).detach().float())
    out = torch.cat(outs)
    if not bool(torch.isfinite(out).all()):
        raise ValueError("model: the model returned NaN or infinite scores")
    return out


def class_scores(logits: Tensor, idx: Tensor, score: str = "softmax") -> Tensor:
    """``s(.)`` of class ``idx[n]`` in row ``n`` of ``logits (N, K)``: softmax probability or logit."""
    _check_choice("score", score, SCORES)
    values = logits.float().softmax(1) if score == "softmax" else logits.float()
    return values.gather(1, idx.to(values.device)[:, None])[:, 0]


# ------------------------------------------------------------------------------ Average Drop / Increase
class DropIncrease(NamedTuple):
    """Per image: ``drop = max(0, Y - O) / (Y + 1e-7)`` (a fraction), ``increase = O > Y``,
    ``base = Y``, ``masked = O`` (all ``(B,)``); :class:`Faithfulness` reports the means in percent."""

    drop: Tensor
    increase: Tensor
    base: Tensor
    masked: Tensor


def average_drop_increase(model: nn.Module, x: Tensor, maps: Tensor, target: Any = None, *, score: str = "softmax",
                          output_fn: Callable[[Any], Tensor] | None = None, logits: Tensor | None = None,
                          batch_size: int = 64) -> DropIncrease:
    """Average Drop and Increase in Confidence of ``maps`` for ``x`` (module docstring).

    Args:
        model: the classifier (eval mode).
        x: ``(B, C, H, W)`` model inputs.
        maps: ``(B, h, w)`` in [0, 1] (resized bilinearly to ``H x W``).
        target: None (each image's top class), a class, one per image, or class names.
        score: ``"softmax"`` (as Chattopadhay et al. and torchcam) or ``"logit"``.
        output_fn: picks the class scores from a model output that is not a tensor.
        logits: the model's output for ``x`` when already computed (saves one forward).
        batch_size: images per forward.

    Returns:
        :class:`DropIncrease` with one value per image.
    """
    x = _check_x(x)
    maps = _check_maps(maps, x)
    _check_choice("score", score, SCORES)
    batch_size = check_int("batch_size", batch_size)
    idx, logits = _targets(model, x, target, logits, output_fn, batch_size)
    base = class_scores(logits, idx, score)
    masked = class_scores(_forward(model, x * maps[:, None].to(x.dtype), output_fn, batch_size), idx, score)
    drop = (base - masked).clamp_min(0) / (base + 1e-7)
    return DropIncrease(drop, masked > base, base, masked)


# ------------------------------------------------------------------------------ deletion / insertion
def _gaussian_blur(x: Tensor, size: int = 11, sigma: float = 5.0) -> Tensor:
    t = torch.arange(size, dtype=torch.float32, device=x.device) - (size - 1) / 2
    g = torch.exp(-t.square() / (2 * sigma * sigma))
    g = (g / g.sum()).to(x.dtype)
    C = x.shape[1]
    pad = size // 2
    y = F.pad(x, (pad, pad, 0, 0), mode="replicate")
    y = F.conv2d(y, g.view(1, 1, 1, size).expand(C, 1, 1, size), groups=C)
    y = F.pad(y, (0, 0, pad, pad), mode="replicate")
    return F.conv2d(y, g.view(1, 1, size, 1).expand(C, 1, size, 1), groups=C)


def baseline_image(x: Tensor, baseline: Baseline, argument: str = "baseline") -> Tensor:
    """The baseline image of each image of ``x``: ``"zeros"``, ``"blur"`` (Gaussian, kernel 11,
    sigma 5, edges replicated), ``"mean"`` (per image and channel), a tensor broadcastable to
    ``x`` or a callable ``f(x)`` returning one."""
    if isinstance(baseline, str):
        _check_choice(argument, baseline, BASELINES)
        if baseline == "zeros":
            return torch.zeros_like(x)
        if baseline == "mean":
            return x.mean(dim=(2, 3), keepdim=True).expand_as(x)
        return _gaussian_blur(x)
    if callable(baseline) and not isinstance(baseline, Tensor):
        baseline = baseline(x)
    if not isinstance(baseline, Tensor):
        raise TypeError(f"{argument} must be one of {', '.join(BASELINES)}, a tensor or a callable returning one, "
                        f"got {type(baseline).__name__}")
    try:
        return torch.broadcast_to(baseline.to(device=x.device, dtype=x.dtype), x.shape)
    except RuntimeError:
        raise ValueError(f"{argument}: shape {tuple(baseline.shape)} does not broadcast to x's {tuple(x.shape)}") from None


class Curves(NamedTuple):
    """Deletion and insertion: ``fractions (S,)`` of pixels changed at each point, the score curves
    ``deletion``, ``insertion`` ``(B, S)`` and their areas ``deletion_auc``, ``insertion_auc`` ``(B,)``."""

    fractions: Tensor
    deletion: Tensor
    insertion: Tensor
    deletion_auc: Tensor
    insertion_auc: Tensor


def deletion_insertion(model: nn.Module, x: Tensor, maps: Tensor, target: Any = None, *, steps: int = 20,
                       deletion_baseline: Baseline = "zeros", insertion_baseline: Baseline = "blur",
                       score: str = "softmax", output_fn: Callable[[Any], Tensor] | None = None,
                       logits: Tensor | None = None, batch_size: int = 64) -> Curves:
    """Deletion and insertion curves and areas of ``maps`` for ``x`` (module docstring).

    Every perturbed input is built on the device from the pixel ranks and scored
    ``batch_size`` at a time: ``2 (S - 2) + 2`` forwards per image for ``S`` points (one fewer
    when both baselines are the same named one: the all-baseline input is shared), plus the
    forward of ``x`` unless ``logits`` is given.

    Args:
        steps: the number of intervals (points ``ceil(HW / ceil(HW / steps))`` + 1).
        deletion_baseline, insertion_baseline: see :func:`baseline_image`.
        Others: as for :func:`average_drop_increase`.
    """
    x = _check_x(x)
    maps = _check_maps(maps, x)
    steps = check_int("steps", steps)
    _check_choice("score", score, SCORES)
    batch_size = check_int("batch_size", batch_size)
    base_del = baseline_image(x, deletion_baseline, "deletion_baseline")
    base_ins = baseline_image(x, insertion_baseline, "insertion_baseline")
    idx, logits = _targets(model, x, target, logits, output_fn, batch_size)
    B, C, H, W = x.shape
    N = H * W
    order = torch.argsort(maps.flatten(1), dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(N, device=order.device).expand(B, N))
    step = -(-N // steps)
    counts = [*range(0, N, step), N]
    S = len(counts)
    fractions = torch.tensor(counts, dtype=torch.float32, device=x.device) / N
    shared = isinstance(deletion_baseline, str) and deletion_baseline == insertion_baseline
    # jobs (image, kind, point): kind 0 deletion (points 1..S-1), 1 insertion (points 0..S-2)
    jobs = [(b, 0, j) for b in range(B) for j in range(1, S)]
    jobs += [(b, 1, j) for b in range(B) for j in range(0 if not shared else 1, S - 1)]
    jb = torch.tensor([j[0] for j in jobs], dtype=torch.long, device=x.device)
    jk = torch.tensor([j[1] for j in jobs], dtype=torch.bool, device=x.device)
    jc = torch.tensor([counts[j[2]] for j in jobs], dtype=torch.long, device=x.device)
    scores = torch.empty(len(jobs), dtype=torch.float32, device=x.device)
    xf, dflat, iflat = x.flatten(2), base_del.flatten(2), base_ins.flatten(2)
    with torch.no_grad():
        for s in range(0, len(jobs), batch_size):
            b, ins, c = jb[s:s + batch_size], jk[s:s + batch_size], jc[s:s + batch_size]
            first = ranks[b] < c[:, None]  # (n, N): the c best-ranked pixels
            # deletion: best pixels from the baseline, the rest from x; insertion: the reverse
            keep_x = torch.where(ins[:, None], first, ~first)
            other = torch.where(ins[:, None, None], iflat[b], dflat[b])
            inputs = torch.where(keep_x[:, None], xf[b], other).reshape(-1, C, H, W)
            scores[s:s + batch_size] = class_scores(_forward(model, inputs, output_fn, batch_size), idx[b], score)
    base = class_scores(logits, idx, score)
    deletion = torch.empty(B, S, dtype=torch.float32, device=x.device)
    insertion = torch.empty_like(deletion)
    deletion[:, 0] = base
    insertion[:, -1] = base
    n_del = B * (S - 1)
    deletion[:, 1:] = scores[:n_del].reshape(B, S - 1)
    if shared:
        insertion[:, 0] = deletion[:, -1]
        insertion[:, 1:-1] = scores[n_del:].reshape(B, S - 2)
    else:
        insertion[:, :-1] = scores[n_del:].reshape(B, S - 1)
    return Curves(fractions, deletion, insertion, torch.trapezoid(deletion, fractions, dim=1),
                  torch.trapezoid(insertion, fractions, dim=1))


# ------------------------------------------------------------------------------ ROAD
def _percentile_values(values: Tensor, percent: Tensor) -> Tensor:
    """``numpy.percentile(values[b], percent)`` (its default, linear interpolation) for every row
    of ``values (B, N)`` and every ``percent (P,)``: ``(B, P)`` float64, with numpy's own
    arithmetic (its virtual index ``n q + (1 - q) - 1``, the difference of neighbours in the
    values' dtype, its two-sided interpolation), so that the thresholds and the pixels they
    select match numpy's."""
    srt = values.sort(dim=1).values
    n = srt.shape[1]
    q = percent.to(torch.float64) / 100
    virtual = n * q + (1 - q) - 1
    lo = virtual.floor().clamp(0, n - 1)
    t = (virtual - lo)[None]
    lo = lo.long()
    hi = (lo + 1).clamp(max=n - 1)
    a, b = srt[:, lo], srt[:, hi]
    diff = (b - a).to(torch.float64)
    a, b = a.to(torch.float64), b.to(torch.float64)
    return torch.where(t >= 0.5, b - diff * (1 - t), a + diff * t)


def removal_masks(maps: Tensor, percentiles: Sequence[float] = PERCENTILES, most_relevant: bool = True) -> Tensor:
    """ROAD's removed pixels: ``(B, P, H, W)`` bool, True where removed.

    MoRF (``most_relevant``) removes ``M >= t`` with ``t`` the ``(100 - p)``-th percentile of
    ``M``; LeRF removes ``1 - M >= t`` with ``t`` that percentile of ``1 - M`` (comparisons in
    float32 against the threshold rounded to float32, as pytorch-grad-cam's
    ``RemoveMostRelevantFirst(100 - p)`` / ``RemoveLeastRelevantFirst(100 - p)`` select them).
    """
    if not isinstance(maps, Tensor) or maps.dim() != 3:
        raise ValueError(f"maps must be a (B, H, W) tensor, got {getattr(maps, 'shape', type(maps).__name__)}")
    percentiles = check_percentiles(percentiles)
    m = maps.detach().float()
    if not most_relevant:
        m = 1 - m
    q = torch.tensor([100 - p for p in percentiles], dtype=torch.float64, device=m.device)
    thr = _percentile_values(m.flatten(1), q).to(torch.float32)  # (B, P)
    return m[:, None] >= thr[:, :, None, None]


class _Stencil:
    """``a u + w (K u) + c`` for planes ``u (n, H, W)``, ``K`` the 3x3 window ``[1, 2, 1]^T
    [1, 2, 1]`` inside the image: one pass of ``camfast::neighbour_stencil``
    (:func:`camfast.ops.neighbour_stencil`). The solver makes its arguments itself, so the op's
    backend is resolved once (honouring :func:`camfast.ops.use_backend`) and called directly:
    the op's checks and dispatch cost about 20 us a call, a sixth of the solve at 224 pixels,
    where the coarse levels make thousands of small calls. Coefficients are given as
    :meth:`coef` views (``(n, 1, H, W)``; broadcast ones stride 0, never copied)."""

    def __init__(self, device: torch.device) -> None:
        self._forward = unchecked_kernel(device)

    @staticmethod
    def coef(t: Tensor, shape: torch.Size) -> Tensor:
        """``t`` broadcast to planes of ``shape`` ``(n, H, W)``, as the kernel takes it."""
        return t.expand(shape).unsqueeze(1)

    def __call__(self, u: Tensor, a: Tensor, w: Tensor, c: Tensor) -> Tensor:
        c = c.unsqueeze(1) if c.dim() == 3 else c
        return self._forward(u.unsqueeze(1), a, w, c).squeeze(1)


def _neighbour_sum(u: Tensor) -> Tensor:
    """``sum_j w_ij u_j`` over the 8 neighbours inside the image (ROAD's weights: 1/6 direct,
    1/12 diagonal, i.e. ``(K - 4) / 12``), for ``u (N, H, W)``."""
    a, w, zero = (_Stencil.coef(u.new_full((), v), u.shape) for v in (-1 / 3, 1 / 12, 0.0))
    return _Stencil(u.device)(u, a, w, zero)


def _pyramid_fill(values: Tensor, known: Tensor) -> Tensor:
    """A smooth first guess of the removed pixels: kept pixels averaged down a pyramid (2x2 means
    of the kept ones) until every cell has one, then brought back up bilinearly."""
    levels = []
    v, w = values * known, known
    while True:
        levels.append((v, w))
        if bool((w > 0).all()) or min(v.shape[-2:]) <= 1:
            break
        ws = F.avg_pool2d(w[:, None], 2, ceil_mode=True)[:, 0]
        vs = F.avg_pool2d(v[:, None], 2, ceil_mode=True)[:, 0]
        v = torch.where(ws > 0, vs / ws.clamp_min(1e-12), torch.zeros_like(vs))
        w = (ws > 0).to(v.dtype)
    fill = levels[-1][0]
    for v, w in reversed(levels[:-1]):
        up = F.interpolate(fill[:, None], size=v.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        fill = torch.where(w > 0, v, up)
    return fill


def _restrict(res: Tensor) -> Tensor:
    """The sums of the 2x2 children (a missing row or column counts as 0)."""
    h, w = res.shape[-2:]
    if h % 2 or w % 2:
        res = F.pad(res, (0, w % 2, 0, h % 2))
    return res[:, 0::2, 0::2] + res[:, 1::2, 0::2] + res[:, 0::2, 1::2] + res[:, 1::2, 1::2]


class _Multigrid:
    """A symmetric positive definite preconditioner for the imputation system: one V-cycle.

    Levels halve the grid (a coarse cell is unknown when any of its 2x2 children is) down to 4
    pixels a side; on each, ``nu`` damped-Jacobi sweeps (``omega`` 0.8: below 1, where
    Gershgorin's bound makes the sweep a contraction for any mask) before and after the coarse
    correction; restriction sums the 2x2 children, prolongation copies a coarse value to them
    (its transpose), the coarse operator is the same stencil times ``scale`` per level
    (piecewise-constant aggregation roughly halves the operator's scale: 1.5 converged fastest
    between 1 and 2.5, 17 conjugate-gradient iterations instead of 22 with 2 at 224 pixels;
    bilinear prolongation did not converge faster). Symmetric sweeps and ``R = P^T`` keep it
    SPD, so conjugate gradients stay exact; it only changes how fast they converge.

    A sweep ``z + s (r - A z)`` (``s`` the damped inverse diagonal on the unknown pixels, 0
    elsewhere) and the masked residual ``m (r - A z)`` are each one :class:`_Stencil` pass,
    with coefficients made once per level (``A z = f (d + 1/3) z - f (K z) / 12``)."""

    def __init__(self, m: Tensor, d: Tensor, nu: int = 2, omega: float = 0.8, scale: float = 1.5) -> None:
        self.nu = nu
        self.stencil = _Stencil(m.device)
        coef = _Stencil.coef
        # per level: (mask, damped inverse diagonal s, sweep (a, w), masked residual (a, w))
        self.levels = []
        factor = 1.0
        while True:
            fdd = factor * (d + 1 / 3)
            inv = omega / (factor * d) * m
            self.levels.append((m, inv, (coef(1 - inv * fdd, m.shape), coef(inv * (factor / 12), m.shape)),
                                (coef(-fdd * m, m.shape), coef(m * (factor / 12), m.shape))))
            if min(m.shape[-2:]) <= 4:
                break
            m = F.max_pool2d(m[:, None], 2, ceil_mode=True)[:, 0]
            factor *= scale
            d = _neighbour_sum(torch.ones(1, *m.shape[-2:], dtype=m.dtype, device=m.device))

    def _cycle(self, level: int, r: Tensor) -> Tensor:
        m, inv, (sa, sw), (ra, rw) = self.levels[level]
        coarsest = level + 1 == len(self.levels)
        ir = r * inv
        z = ir  # the first sweep, from z = 0
        for _ in range((4 * self.nu if coarsest else self.nu) - 1):
            z = self.stencil(z, sa, sw, ir)
        if coarsest:
            return z
        h, w = r.shape[-2:]
        coarse = _restrict(self.stencil(z, ra, rw, r)).mul_(self.levels[level + 1][0])
        e = self._cycle(level + 1, coarse)
        n, hc, wc = e.shape  # prolongation: each coarse value to its 2x2 children (one copy)
        fine = e[:, :, None, :, None].expand(n, hc, 2, wc, 2).reshape(n, 2 * hc, 2 * wc)[:, :h, :w]
        z = z.addcmul(fine, m)
        for _ in range(self.nu):
            z = self.stencil(z, sa, sw, ir)
        return z

    def __call__(self, r: Tensor) -> Tensor:
        return self._cycle(0, r)


def noisy_linear_imputation(x: Tensor, removed: Tensor, noise: float = 0.01, *,
                            generator: torch.Generator | None = None, tol: float = 1e-6,
                            max_iter: int | None = None, multigrid: bool = True, return_info: bool = False):
    """Fill the ``removed`` pixels of ``x`` by noisy linear imputation (module docstring).

    Args:
        x: ``(N, C, H, W)`` images (float32 or float64; the solve runs in that dtype).
        removed: ``(N, H, W)`` bool, True where a pixel is imputed (for every channel).
        noise: standard deviation of the Gaussian noise added to imputed pixels (0: none).
        generator: for the noise (reproducible runs).
        tol: stop when every system's residual is below ``tol`` times its right-hand side
            (2-norms).
        max_iter: conjugate-gradient iterations at most (default ``4 * (H + W) + 100``).
        multigrid: precondition with a geometric multigrid V-cycle (:class:`_Multigrid`; tens of
            iterations at 224 pixels); False: the diagonal only (hundreds).
        return_info: also return ``{"iterations": k, "residual": (N, C) relative residuals}``.

    An image with no kept pixel has no defined imputation: its removed pixels become 0 (plus noise).
    """
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"x must be a floating (N, C, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    if not isinstance(removed, Tensor) or removed.shape != (x.shape[0], *x.shape[2:]):
        raise ValueError(f"removed must be an (N, H, W) = {(x.shape[0], *x.shape[2:])} mask, got "
                         f"{getattr(removed, 'shape', type(removed).__name__)}")
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not math.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a number >= 0, got {noise!r}")
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not 0 < tol < 1:
        raise ValueError(f"tol must be a number in (0, 1), got {tol!r}")
    N, C, H, W = x.shape
    max_iter = 4 * (H + W) + 100 if max_iter is None else check_int("max_iter", max_iter, 0)
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    v = x.detach().to(dtype).reshape(N * C, H, W)
    rem = removed.to(device=x.device, dtype=torch.bool)[:, None].expand(N, C, H, W).reshape(N * C, H, W)
    # Every (image, channel) plane is its own system. On the CPU they are solved a few planes at
    # a time (about _CPU_CHUNK_ELEMENTS pixels): the ~60 whole-plane passes of an iteration then
    # stay in the cache instead of streaming from memory, and each group stops at its own
    # convergence. On a GPU one batch.
    step = N * C if x.device.type != "cpu" else max(1, _CPU_CHUNK_ELEMENTS // (H * W))
    parts = [_solve_planes(v[i:i + step], rem[i:i + step], tol, max_iter, multigrid)
             for i in range(0, N * C, step)]
    out = torch.cat([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    if noise > 0:
        out = out + noise * torch.randn(out.shape, generator=generator, dtype=dtype, device=x.device) * rem
    out = out.reshape(N, C, H, W).to(x.dtype)
    if return_info:
        residual = torch.cat([p[2] for p in parts]).reshape(N, C)
        return out, {"iterations": max(p[1] for p in parts), "residual": residual}
    return out


#: Pixels per group of planes solved together on the CPU (:func:`noisy_linear_imputation`):
#: 2**19 (10 planes of 224 x 224, about 2 MiB per float32 array). Of 2**16..2**22, 2**18 and
#: 2**19 were the fastest on 36 images of 224 pixels (0.89 and 0.90 s against 1.34 s at 2**22)
#: and 2**19 on 8 images of 448 (0.82 s against 1.33 s at 2**22).
_CPU_CHUNK_ELEMENTS = 1 << 19


def _solve_planes(v: Tensor, rem: Tensor, tol: float, max_iter: int, multigrid: bool) -> tuple[Tensor, int, Tensor]:
    """Noisy linear imputation without the noise for planes ``v (n, H, W)`` whose pixels
    ``rem (n, H, W)`` are removed: ``(the imputed planes, conjugate-gradient iterations,
    relative residuals (n,))``."""
    dtype = v.dtype
    H, W = v.shape[-2:]
    m = rem.to(dtype)
    known = 1 - m
    d = _neighbour_sum(torch.ones(1, H, W, dtype=dtype, device=v.device))  # (1, H, W)
    v_known = v * known
    b = _neighbour_sum(v_known) * m

    stencil = _Stencil(v.device)
    a_op, w_op, zero = (stencil.coef(t, m.shape) for t in ((d + 1 / 3) * m, m * (-1 / 12), v.new_zeros(())))

    def apply(u: Tensor) -> Tensor:  # (d u - W u) on the removed pixels; u is 0 on the kept ones
        return stencil(u, a_op, w_op, zero)

    def dot(a: Tensor, c: Tensor) -> Tensor:
        return (a * c).sum(dim=(1, 2))

    precondition = _Multigrid(m, d) if multigrid else (lambda res: res / d)
    u = _pyramid_fill(v, known) * m
    r = b - apply(u)
    z = precondition(r)
    p = z
    rz = dot(r, z)
    bnorm = b.square().sum(dim=(1, 2)).sqrt()
    limit = tol * bnorm
    it = 0
    rnorm = r.square().sum(dim=(1, 2)).sqrt()
    while it < max_iter and bool((rnorm > limit).any()):
        active = (rnorm > limit).to(dtype)
        ap = apply(p)
        pap = dot(p, ap)
        alpha = torch.where(pap > 0, rz / pap.clamp_min(torch.finfo(dtype).tiny), torch.zeros_like(rz)) * active
        u.addcmul_(p, alpha[:, None, None])
        r.addcmul_(ap, alpha[:, None, None], value=-1)
        z = precondition(r)
        rz_new = dot(r, z)
        beta = torch.where(rz > 0, rz_new / rz.clamp_min(torch.finfo(dtype).tiny), torch.zeros_like(rz))
        p = z.addcmul(p, beta[:, None, None])
        rz = rz_new
        rnorm = dot(r, r).sqrt()
        it += 1
    return v_known + u * m, it, rnorm / bnorm.clamp_min(torch.finfo(dtype).tiny)


class ROADResult(NamedTuple):
    """ROAD per image: ``morf``, ``lerf`` ``(B, P)`` score changes ``s(imputed) - s(x)`` per
    percentage; ``morf_mean``, ``lerf_mean`` their means over the percentages and ``combined =
    (lerf_mean - morf_mean) / 2`` (all ``(B,)``); ``percentiles`` the percentages removed."""

    morf: Tensor
    lerf: Tensor
    morf_mean: Tensor
    lerf_mean: Tensor
    combined: Tensor
    percentiles: tuple[float, ...]


def road(model: nn.Module, x: Tensor, maps: Tensor, target: Any = None, *,
         percentiles: Sequence[float] = PERCENTILES, noise: float = 0.01, generator: torch.Generator | None = None,
         score: str = "softmax", output_fn: Callable[[Any], Tensor] | None = None, logits: Tensor | None = None,
         batch_size: int = 64, tol: float = 1e-6, max_iter: int | None = None) -> ROADResult:
    """ROAD, MoRF and LeRF at every percentage of ``percentiles``, and combined (module docstring).

    The ``2 P`` imputations of every image are solved together, ``batch_size`` systems (times
    the channels) per solve, and scored ``batch_size`` at a time: ``2 P`` forwards per image
    plus the forward of ``x`` unless ``logits`` is given.

    Args:
        percentiles: percent of pixels removed (each strictly between 0 and 100).
        noise, generator, tol, max_iter: of :func:`noisy_linear_imputation`.
        Others: as for :func:`average_drop_increase`.
    """
    x = _check_x(x)
    maps = _check_maps(maps, x)
    percentiles = check_percentiles(percentiles)
    _check_choice("score", score, SCORES)
    batch_size = check_int("batch_size", batch_size)
    idx, logits = _targets(model, x, target, logits, output_fn, batch_size)
    B = x.shape[0]
    P = len(percentiles)
    masks = torch.cat([removal_masks(maps, percentiles, True), removal_masks(maps, percentiles, False)], dim=1)
    masks = masks.reshape(B * 2 * P, *maps.shape[-2:])  # image-major: (b, [MoRF p..., LeRF p...])
    owner = torch.arange(B, device=x.device).repeat_interleave(2 * P)
    changed = torch.empty(B * 2 * P, dtype=torch.float32, device=x.device)
    base = class_scores(logits, idx, score)
    for s in range(0, owner.numel(), batch_size):
        b = owner[s:s + batch_size]
        imputed = noisy_linear_imputation(x[b], masks[s:s + batch_size], noise, generator=generator, tol=tol,
                                          max_iter=max_iter)
        changed[s:s + batch_size] = class_scores(_forward(model, imputed, output_fn, batch_size), idx[b], score) \
            - base[b]
    changed = changed.reshape(B, 2, P)
    morf, lerf = changed[:, 0], changed[:, 1]
    mm, lm = morf.mean(1), lerf.mean(1)
    return ROADResult(morf, lerf, mm, lm, (lm - mm) / 2, percentiles)


# ------------------------------------------------------------------------------ streaming
class Faithfulness:
    """Running means of the faithfulness metrics over a dataset, one batch at a time.

    Args:
        model: the classifier (eval mode).
        metrics: any of :data:`METRICS` (default all).
        score, steps, deletion_baseline, insertion_baseline, percentiles, noise, batch_size,
        output_fn, tol: as for the metric functions.
        seed: seeds ROAD's noise (a generator on the input's device), so a rerun gives the
            same numbers; None uses the global generator.

    ``update(x, maps, target=None, logits=None)`` scores one batch and returns its per-image
    values; ``compute()`` returns the means so far (Average Drop and Increase in Confidence in
    percent, areas as fractions, ROAD's score changes per percentage and averaged).
    """

    def __init__(self, model: nn.Module, metrics: Sequence[str] = METRICS, *, score: str = "softmax",
                 steps: int = 20, deletion_baseline: Baseline = "zeros", insertion_baseline: Baseline = "blur",
                 percentiles: Sequence[float] = PERCENTILES, noise: float = 0.01, seed: int | None = 0,
                 batch_size: int = 64, output_fn: Callable[[Any], Tensor] | None = None, tol: float = 1e-6) -> None:
        if not isinstance(model, nn.Module) and not callable(model):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if isinstance(metrics, str):
            metrics = (metrics,)
        metrics = tuple(metrics)
        for m in metrics:
            _check_choice("metrics", m, METRICS)
        if not metrics:
            raise ValueError(f"metrics must name at least one of {', '.join(METRICS)}")
        self.model, self.metrics = model, metrics
        self.score = _check_choice("score", score, SCORES)
        self.steps = check_int("steps", steps)
        for name, value in (("deletion_baseline", deletion_baseline), ("insertion_baseline", insertion_baseline)):
            if isinstance(value, str):
                _check_choice(name, value, BASELINES)
        self.deletion_baseline, self.insertion_baseline = deletion_baseline, insertion_baseline
        self.percentiles = check_percentiles(percentiles)
        self.noise, self.seed, self.tol = noise, seed, tol
        self.batch_size = check_int("batch_size", batch_size)
        self.output_fn = output_fn
        self._generators: dict[torch.device, torch.Generator] = {}
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.sums: dict[str, Tensor] = {}

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    def _add(self, key: str, values: Tensor) -> None:
        total = values.detach().double().sum(0).cpu()
        self.sums[key] = self.sums[key] + total if key in self.sums else total

    def update(self, x: Tensor, maps: Tensor, target: Any = None, logits: Tensor | None = None) -> dict[str, Tensor]:
        """Score one batch; returns its per-image values (``(B,)`` or ``(B, P)`` tensors)."""
        x = _check_x(x)
        maps = _check_maps(maps, x)
        idx, logits = _targets(self.model, x, target, logits, self.output_fn, self.batch_size)
        common = dict(score=self.score, output_fn=self.output_fn, logits=logits, batch_size=self.batch_size)
        out: dict[str, Tensor] = {}
        if "drop-increase" in self.metrics:
            r = average_drop_increase(self.model, x, maps, idx, **common)
            out["average_drop"], out["increase_in_confidence"] = 100 * r.drop, 100 * r.increase.float()
        if "deletion-insertion" in self.metrics:
            c = deletion_insertion(self.model, x, maps, idx, steps=self.steps, deletion_baseline=self.deletion_baseline,
                                   insertion_baseline=self.insertion_baseline, **common)
            out["deletion_auc"], out["insertion_auc"] = c.deletion_auc, c.insertion_auc
        if "road" in self.metrics:
            r = road(self.model, x, maps, idx, percentiles=self.percentiles, noise=self.noise,
                     generator=self._generator(x.device), tol=self.tol, **common)
            out.update(road_morf=r.morf_mean, road_lerf=r.lerf_mean, road_combined=r.combined,
                       road_morf_per_percentile=r.morf, road_lerf_per_percentile=r.lerf)
        for k, v in out.items():
            self._add(k, v)
        self.count += x.shape[0]
        return out

    def compute(self) -> dict[str, Any]:
        """The means over every image so far: floats, and per-percentage dicts ``{p: value}`` for ROAD."""
        if self.count == 0:
            raise ValueError("Faithfulness.compute(): no batch was scored yet (call update first)")
        res: dict[str, Any] = {"images": self.count}
        for k, total in self.sums.items():
            mean = total / self.count
            if k.endswith("_per_percentile"):
                res[k] = {_percent_key(p): float(v) for p, v in zip(self.percentiles, mean)}
            else:
                res[k] = float(mean)
        return res


def _percent_key(p: float) -> str:
    return str(int(p)) if float(p).is_integer() else str(p)


def _split_batch(batch: Any) -> tuple[Tensor, Any, Tensor | None]:
    """``x``, ``target``, ``maps`` from a batch: a tensor, ``(x,)``, ``(x, target)``,
    ``(x, target, maps)`` or a dict with ``"x"`` (or ``"image"``), ``"target"``, ``"maps"``."""
    if isinstance(batch, Tensor):
        return batch, None, None
    if isinstance(batch, Mapping):
        x = batch.get("x", batch.get("image"))
        return x, batch.get("target"), batch.get("maps")
    if isinstance(batch, (tuple, list)) and 1 <= len(batch) <= 3:
        items = list(batch) + [None] * (3 - len(batch))
        return items[0], items[1], items[2]
    raise TypeError("batches must yield a tensor x, a tuple (x, target[, maps]) or a dict with 'x', 'target', "
                    f"'maps'; got {type(batch).__name__}")


def evaluate(model: nn.Module, batches: Iterable[Any], method: Any = None, *, total: int | None = None,
             progress: str = "auto", method_options: Mapping[str, Any] | None = None,
             **options: Any) -> dict[str, Any]:
    """Stream ``batches`` through a CAM method and the faithfulness metrics; the means.

    Args:
        model: the classifier (eval mode).
        batches: an iterable of batches (:func:`_split_batch`'s forms): model inputs, optional
            targets, and optional maps (then ``method`` is not run for that batch).
        method: a registered method (any spelling, or its function), or a callable
            ``f(model, x, target) -> (B, H, W)`` maps in [0, 1].
        total: the number of images, for the progress display (default: unknown).
        progress: :class:`camfast.utils.progress.Progress` mode.
        method_options: keyword arguments for the method.
        options: for :class:`Faithfulness`.

    Returns:
        :meth:`Faithfulness.compute` plus ``"seconds_maps"`` and ``"seconds_metrics"``.
    """
    import time

    from camfast.utils.progress import Progress

    meter = Faithfulness(model, **options)
    run = None
    if method is not None:
        if callable(method) and not isinstance(method, str):
            try:
                from camfast.methods import registry

                run = registry.get(method)
            except ValueError:
                run = method
        else:
            from camfast.methods import registry

            run = registry.get(method)
    bar = Progress(total if total is not None else 0, "faithfulness", mode=progress, noun="images", unit="img")
    t_maps = t_metrics = 0.0
    try:
        for batch in batches:
            x, target, maps = _split_batch(batch)
            x = _check_x(x)
            t0 = time.perf_counter()
            idx, logits = _targets(model, x, target, None, meter.output_fn, meter.batch_size)
            if maps is None:
                if run is None:
                    raise ValueError("method: give a CAM method, or batches that carry their maps")
                maps = run(model, x, idx, **dict(method_options or {}))
            t1 = time.perf_counter()
            meter.update(x, maps, idx, logits)
            t_maps += t1 - t0
            t_metrics += time.perf_counter() - t1
            bar.update(x.shape[0])
    finally:
        bar.close()
    out = meter.compute()
    out["seconds_maps"], out["seconds_metrics"] = t_maps, t_metrics
    return out
