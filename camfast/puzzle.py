"""Puzzle-CAM (Jo & Yu, ICIP 2021; official code shjo-april/PuzzleCAM).

Training: the image is cut into a ``grid x grid`` puzzle, the tiles run through the same
classifier, their class maps are merged back into one map ``F_re`` and matched with the
full image's map ``F``::

    F    = f(images)                           # (B, K, h, w) class maps
    F_re = merge(f(tile(images)))              # (B, K, h, w)
    L    = MLSM(GAP(F), y) + MLSM(GAP(F_re), y) + alpha * mean(|F - F_re| * y[:, :, None, None])
    alpha = min(alpha_max * it / (warmup * max_it), alpha_max)

(MLSM: multilabel soft margin loss; ``y`` multi-hot ``(B, K)``.) The tile order is the
official ``tile_features`` / ``merge_features``: tiles in row-major order (top-left,
top-right, bottom-left, bottom-right for ``grid=2``), stacked **tile-major** on the batch
axis: output row ``t * B + b`` is tile ``t`` of image ``b``.

Inference for pseudo-labels: :func:`multiscale_cam`.

The model contract of :func:`puzzle_step` and :func:`multiscale_cam`: ``model(x)`` with
``x`` ``(N, C, H, W)`` returns the class maps ``(N, K, h, w)`` (a backbone then a 1x1
convolution without bias, so that ``GAP(F)`` are the logits); give ``output_fn`` to pick
the maps from another output (for example ``output_fn=lambda out: out[1]`` for a model
returning ``(logits, maps)``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PuzzleCAMLoss", "PuzzleLoss", "merge", "multiscale_cam", "puzzle_step", "tile"]


def _check_grid(grid: object) -> int:
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
        raise ValueError(f"grid must be a positive int, got {grid!r}")
    return grid


def _check_4d(name: str, x: object, layout: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must have 4 dimensions {layout}, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    return x


def tile(images: Tensor, grid: int = 2) -> Tensor:
    """Cut each image into a ``grid x grid`` puzzle and stack the tiles on the batch axis.

    Args:
        images: ``(B, C, H, W)``, ``H`` and ``W`` divisible by ``grid``.
        grid: pieces per side (2 in the paper: 4 tiles).

    Returns:
        ``(grid * grid * B, C, H / grid, W / grid)``; row ``t * B + b`` is tile
        ``t = i * grid + j`` (row ``i``, column ``j``, row-major) of image ``b``, as the
        official ``tile_features``.

    Raises:
        ValueError: ``H`` or ``W`` not divisible by ``grid`` (the official code would
            silently make extra, smaller tiles).
    """
    grid = _check_grid(grid)
    x = _check_4d("images", images, "(B, C, H, W)")
    b, c, h, w = x.shape
    if h % grid or w % grid:
        raise ValueError(f"images: height {h} and width {w} must be divisible by grid={grid}")
    th, tw = h // grid, w // grid
    return (x.reshape(b, c, grid, th, grid, tw)
            .permute(2, 4, 0, 1, 3, 5)
            .reshape(grid * grid * b, c, th, tw))


def merge(features: Tensor, grid: int = 2) -> Tensor:
    """Put tiles back together: the exact inverse of :func:`tile`.

    Args:
        features: ``(grid * grid * B, K, h, w)`` in :func:`tile`'s order (tile-major).
        grid: pieces per side.

    Returns:
        ``(B, K, grid * h, grid * w)``.

    Raises:
        ValueError: the batch size is not a multiple of ``grid * grid``.
    """
    grid = _check_grid(grid)
    x = _check_4d("features", features, "(grid*grid*B, K, h, w)")
    n, k, h, w = x.shape
    if n % (grid * grid):
        raise ValueError(f"features: batch size {n} must be a multiple of grid*grid = {grid * grid}")
    b = n // (grid * grid)
    return (x.reshape(grid, grid, b, k, h, w)
            .permute(2, 3, 0, 4, 1, 5)
            .reshape(b, k, grid * h, grid * w))


class PuzzleLoss(NamedTuple):
    """What :class:`PuzzleCAMLoss` returns.

    Attributes:
        total: ``cls + p_cls + alpha * re`` (scalar tensor; backward this one).
        cls: ``MLSM(GAP(F), y)``.
        p_cls: ``MLSM(GAP(F_re), y)``.
        re: ``mean(|F - F_re| * y[:, :, None, None])``.
        alpha: the weight of ``re`` at this iteration (a float).
    """

    total: Tensor
    cls: Tensor
    p_cls: Tensor
    re: Tensor
    alpha: float


class PuzzleCAMLoss(nn.Module):
    """The Puzzle-CAM loss ``L_cls + L_pcls + alpha * L_re`` (Jo & Yu 2021, Eq. 1-4).

    Args:
        alpha_max: the final weight of the reconstruction term (4 in the paper's best run;
            the official code's default is 1).
        warmup: the fraction of ``max_iterations`` over which ``alpha`` grows linearly from 0
            to ``alpha_max`` (the official ``alpha_schedule``); ``0`` uses ``alpha_max`` from
            the start.
        grid: the puzzle size used by :func:`puzzle_step` with this loss.

    Forward args:
        maps: ``F`` ``(B, K, h, w)``, the class maps of the full images.
        merged: ``F_re`` ``(B, K, h, w)``, the merged class maps of the tiles.
        labels: ``y`` ``(B, K)`` multi-hot (0/1; soft values are used as weights as given).
        iteration: the current iteration (0-based, ``>= 0``).
        max_iterations: the total number of iterations (``> 0``).

    Returns:
        :class:`PuzzleLoss` ``(total, cls, p_cls, re, alpha)``.

    Example:
        >>> loss_fn = PuzzleCAMLoss(alpha_max=4.0)
        >>> out = loss_fn(F, F_re, y, iteration=10, max_iterations=100)
        >>> out.total.backward()
    """

    def __init__(self, alpha_max: float = 4.0, warmup: float = 0.5, grid: int = 2) -> None:
        super().__init__()
        if isinstance(alpha_max, bool) or not isinstance(alpha_max, (int, float)) or alpha_max < 0:
            raise ValueError(f"alpha_max must be a number >= 0, got {alpha_max!r}")
        if isinstance(warmup, bool) or not isinstance(warmup, (int, float)) or not (0 <= warmup <= 1):
            raise ValueError(f"warmup must be a number in [0, 1], got {warmup!r}")
        self.alpha_max = float(alpha_max)
        self.warmup = float(warmup)
        self.grid = _check_grid(grid)

    def extra_repr(self) -> str:
        return f"alpha_max={self.alpha_max}, warmup={self.warmup}, grid={self.grid}"

    def alpha(self, iteration: int, max_iterations: int) -> float:
        """``min(alpha_max * iteration / (warmup * max_iterations), alpha_max)``."""
        if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
            raise ValueError(f"iteration must be an int >= 0, got {iteration!r}")
        if isinstance(max_iterations, bool) or not isinstance(max_iterations, int) or max_iterations <= 0:
            raise ValueError(f"max_iterations must be an int > 0, got {max_iterations!r}")
        if self.warmup == 0:
            return self.alpha_max
        return min(self.alpha_max * iteration / (self.warmup * max_iterations), self.alpha_max)

    def forward(self, maps: Tensor, merged: Tensor, labels: Tensor, iteration: int,
                max_iterations: int) -> PuzzleLoss:
        maps = _check_4d("maps", maps, "(B, K, h, w)")
        merged = _check_4d("merged", merged, "(B, K, h, w)")
        if not maps.is_floating_point():
            raise TypeError(f"maps must be a floating tensor, got {maps.dtype}")
        if merged.shape != maps.shape:
            raise ValueError(
                f"merged has shape {tuple(merged.shape)} but maps has {tuple(maps.shape)}; they must match "
                "(with puzzle_step: make the image size divisible by grid * the model's output stride)"
            )
        if not isinstance(labels, Tensor):
            raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
        if labels.shape != maps.shape[:2]:
            raise ValueError(f"labels must have shape (B, K) = {tuple(maps.shape[:2])}, got {tuple(labels.shape)}")
        alpha = self.alpha(iteration, max_iterations)
        y = labels.to(maps.dtype)
        cls = F.multilabel_soft_margin_loss(maps.mean(dim=(2, 3)), y)
        p_cls = F.multilabel_soft_margin_loss(merged.mean(dim=(2, 3)), y)
        re = ((maps - merged).abs() * y[:, :, None, None]).mean()
        return PuzzleLoss(cls + p_cls + alpha * re, cls, p_cls, re, alpha)


def _maps(model: nn.Module, x: Tensor, output_fn: Callable[[Any], Tensor] | None, n: int) -> Tensor:
    out = model(x)
    if output_fn is not None:
        out = output_fn(out)
    if not isinstance(out, Tensor) or out.dim() != 4 or out.shape[0] != n:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"model must return class maps (N, K, h, w) with N = {n} for an input of shape {tuple(x.shape)}, "
            f"got {got}; pass output_fn to pick the maps from the model's output"
        )
    return out


def puzzle_step(model: nn.Module, images: Tensor, labels: Tensor, loss_fn: PuzzleCAMLoss, iteration: int,
                max_iterations: int, optimizer: torch.optim.Optimizer | None = None,
                output_fn: Callable[[Any], Tensor] | None = None) -> PuzzleLoss:
    """One Puzzle-CAM training step for any classifier that returns class maps.

    Two forwards, as the official code (so batch-norm statistics are per pass):
    ``F = model(images)``, ``F_re = merge(model(tile(images, loss_fn.grid)))``, then
    ``loss_fn(F, F_re, labels, iteration, max_iterations)``.

    Args:
        model: ``model(x)`` returns class maps ``(N, K, h, w)`` (or ``output_fn`` picks them).
            The tiles' maps must merge to the full map's size: the image side must be
            divisible by ``grid * stride`` (a ``ValueError`` says so otherwise).
        images: ``(B, C, H, W)``.
        labels: ``(B, K)`` multi-hot.
        loss_fn: a :class:`PuzzleCAMLoss`.
        iteration, max_iterations: for the ``alpha`` schedule.
        optimizer: if given, the step also runs ``zero_grad``, ``total.backward()`` and
            ``step()``; otherwise the caller backwards ``result.total``.
        output_fn: picks the class maps from the model's output.

    Returns:
        The :class:`PuzzleLoss` of this step (still attached to the graph when no optimizer
        is given).
    """
    if not isinstance(loss_fn, PuzzleCAMLoss):
        raise TypeError(f"loss_fn must be a camfast.puzzle.PuzzleCAMLoss, got {type(loss_fn).__name__}")
    images = _check_4d("images", images, "(B, C, H, W)")
    tiles = tile(images, loss_fn.grid)
    maps = _maps(model, images, output_fn, images.shape[0])
    tile_maps = _maps(model, tiles, output_fn, tiles.shape[0])
    result = loss_fn(maps, merge(tile_maps, loss_fn.grid), labels, iteration, max_iterations)
    if optimizer is not None:
        optimizer.zero_grad(set_to_none=True)
        result.total.backward()
        optimizer.step()
    return result


def multiscale_cam(model: nn.Module, x: Tensor, scales: Sequence[float] = (0.5, 1.0, 1.5, 2.0), flip: bool = True,
                   labels: Tensor | None = None, output_fn: Callable[[Any], Tensor] | None = None,
                   image_mode: str = "bilinear") -> Tensor:
    """Puzzle-CAM's multi-scale, flip-augmented CAM used to make pseudo-labels: the one
    scale/flip loop of :func:`camfast.methods.multiscale.scale_sum` on the model's class maps,
    with Puzzle-CAM's defaults (:func:`camfast.methods.multiscale.multiscale` is the same
    recipe for any registered method, with IRN's outputs).

    For each scale ``s``: the images resized to ``(round(H*s), round(W*s))`` (``image_mode``,
    ``align_corners=False``; the official code resizes with PIL bicubic), then
    ``cam_s = ReLU(F(img)) + flip(ReLU(F(flip(img))))`` (the flipped copies run in the same
    batch as the originals; scales that resize to the same size share one forward), resized
    bilinearly (``align_corners=False``) to ``(H, W)``; the scales are summed and each class
    map divided by its maximum + 1e-5.

    Runs under ``torch.no_grad()`` and leaves the model's mode alone (call ``model.eval()``).

    Args:
        model: returns class maps ``(N, K, h, w)`` (or ``output_fn`` picks them).
        x: images ``(B, C, H, W)``, floating.
        scales: positive resize factors.
        flip: add the horizontal flip at each scale.
        labels: optional ``(B, K)`` multi-hot; classes with label 0 are set to zero (the
            official code keeps only the present classes' maps).
        output_fn: picks the class maps from the model's output.
        image_mode: ``"bilinear"`` or ``"bicubic"`` for resizing the images.

    Returns:
        ``(B, K, H, W)`` float maps in ``[0, 1)``, zero for absent classes (with ``labels``)
        and for classes with no positive evidence.
    """
    from camfast.methods.multiscale import check_scales, per_class_max, scale_sum

    x = _check_4d("x", x, "(B, C, H, W)")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating tensor, got {x.dtype}")
    scales = check_scales(scales)
    if image_mode not in ("bilinear", "bicubic"):
        raise ValueError(f"image_mode must be 'bilinear' or 'bicubic'; got {image_mode!r}")
    if labels is not None and not isinstance(labels, Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels is not None and (labels.dim() != 2 or labels.shape[0] != x.shape[0]):
        raise ValueError(f"labels must have shape (B, K) with B = {x.shape[0]}, got {tuple(labels.shape)}")
    with torch.no_grad():
        (total,) = scale_sum(lambda batch: F.relu(_maps(model, batch, output_fn, batch.shape[0])), x, scales, flip,
                             [tuple(x.shape[-2:])], image_mode)
        if labels is not None:
            if labels.shape != total.shape[:2]:
                raise ValueError(f"labels must have shape (B, K) = {tuple(total.shape[:2])}, got {tuple(labels.shape)}")
            total = total * (labels.to(total.device) > 0).to(total.dtype)[:, :, None, None]
        return per_class_max(total)
