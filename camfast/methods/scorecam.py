"""Score-CAM (Wang, Wang, Du, Yang, Zhang, Ding, Mardziel, Hu, CVPR Workshops 2020; METHODS.md
"More per-layer weightings"), with pytorch-grad-cam 1.5.7's masks, on the model's device.

A layer's ``C`` channels become ``C`` masked copies of each image; the model scores every copy
and the softmax of the scores weights the channels. The cost is those ``B * C`` forwards:
here they run in large batches (``batch_size``, default sized to the memory), under
``torch.no_grad``, with the scores kept on the device (one synchronisation per layer). A
channel whose upsampled activation is constant has an all-zero mask (``0 / (0 + 1e-8)``),
so its masked image is all zeros whatever the image: one forward of a zero image scores all
such channels of every image.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camfast.methods.eigencam import eigen_projection
from camfast.methods.engine import assemble_cam, check_input, layer_activations, logits_of, result_size, target_classes
from camfast.methods.gradcam import check_layer_choice
from camfast.methods.layers import default_layer, resolve_layers
from camfast.methods.registry import register
from camfast.methods.state import cam_mode, input_for
from camfast.methods.targets import ClassSets

__all__ = ["channel_scores", "default_batch_size", "score_cam", "scorecam_map"]

#: pytorch-grad-cam's constant in the per-channel min-max normalisation of the masks.
MASK_EPS = 1e-8
#: Most masked images per forward by default on a CPU; on a GPU the memory decides. On a CPU
#: smaller batches stay in cache: benchmarks/score_cam.py (resnet18, 224 px, 512 masked
#: forwards, 2 cores) measured 30.1 s at 64 per forward, 26.5 s at 32 and 22.8 s for
#: pytorch-grad-cam's 16.
CPU_BATCH_CAP = 16
GPU_BATCH_CAP = 1024


def _positive_int(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive int or None, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return int(value)


class _Scores:
    """The target scores of masked images: ``(R, n)`` for a batch of ``n`` copies of images
    ``rows``, for the ``R`` classes of each image (one class, one callable, or rounds)."""

    def __init__(self, target: Any, idx: Tensor | ClassSets | None, batch: int,
                 output_fn: Callable[[Any], Tensor] | None) -> None:
        self.output_fn = output_fn
        self.callables: list[Callable[[Tensor], Tensor]] | None = None
        if isinstance(idx, ClassSets):
            self.classes = idx.rounds.clamp_min(0)  # (R, B); an image's missing classes are dropped later
        elif idx is not None:
            self.classes = idx[None]  # (1, B)
        else:  # callables, one for all images or one per image (checked by target_classes)
            self.callables = [target] * batch if callable(target) else list(target)
            self.classes = torch.zeros((1, batch), dtype=torch.long)

    @property
    def rounds(self) -> int:
        return int(self.classes.shape[0])

    def __call__(self, out: Any, rows: Tensor) -> Tensor:
        logits = logits_of(out, self.output_fn)
        if self.callables is None:
            return logits.gather(1, self.classes.to(logits.device)[:, rows].T).T.float()
        return torch.stack([torch.as_tensor(self.callables[b](o)).reshape(()) for b, o in
                            zip(rows.tolist(), logits)]).float()[None]


def _zero_image_scores(model: nn.Module, x: Tensor, scores: _Scores) -> tuple[Tensor, int]:
    """``(R, B)`` scores of an all-zero image for every image's classes (the score of a channel
    whose mask is zero), and the bytes the leaf modules' outputs take for one image (an upper
    bound of a no-grad forward's working memory, to size the batches)."""
    used = [0]

    def count(module: nn.Module, inputs: Any, output: Any) -> None:
        if isinstance(output, Tensor):
            used[0] += output.numel() * output.element_size()

    handles = [m.register_forward_hook(count) for m in model.modules() if next(m.children(), None) is None]
    try:
        out = model(torch.zeros_like(x[:1]))
    finally:
        for h in handles:
            h.remove()
    B = x.shape[0]
    rows = torch.arange(B, device=x.device)
    if scores.callables is None:
        logits = logits_of(out, scores.output_fn)
        s0 = logits.expand(B, -1).gather(1, scores.classes.to(logits.device).T).T.float()
    else:  # each image's callable on the one output
        s0 = torch.cat([scores(out, rows[b:b + 1]) for b in range(B)], dim=1)
    return s0, used[0] + 2 * x[:1].numel() * x.element_size()


def default_batch_size(device: torch.device, bytes_per_image: int) -> int:
    """Masked images per forward when ``batch_size`` is None: half the free GPU memory (at most
    :data:`GPU_BATCH_CAP`), or 1 GiB on a CPU (at most :data:`CPU_BATCH_CAP`), over an upper
    bound of the memory one image's forward uses."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget, cap = free // 2, GPU_BATCH_CAP
    else:
        budget, cap = 1 << 30, CPU_BATCH_CAP
    return int(max(1, min(cap, budget // max(1, bytes_per_image))))


#: Most bytes of upsampled channels held at once (one image's ``C`` channels unless larger).
UPSAMPLE_BYTES = 512 << 20


def _image_masks(a: Tensor, b: int, size: tuple[int, int], keep: Tensor | None):
    """Image ``b``'s masks, in pieces: ``(channels, masks)`` with ``masks`` ``(k, 1, H, W)``.

    Each piece is upsampled as one ``(1, C', h, w)`` tensor of the image's channels (all ``C``
    of them when they fit in :data:`UPSAMPLE_BYTES`): the CPU kernel's last bits depend on
    the tensor's shape, and pytorch-grad-cam upsamples each image's channels together, so
    channels whose upsampled activation is constant up to rounding get its exact masks."""
    C = a.shape[1]
    step = max(1, min(C, UPSAMPLE_BYTES // max(1, 4 * size[0] * size[1])))
    for c0 in range(0, C, step):
        up = F.interpolate(a[b:b + 1, c0:c0 + step], size=size, mode="bilinear", align_corners=True)[0]
        flat = up.flatten(1)
        lo, hi = flat.amin(1), flat.amax(1)
        varying = hi > lo  # a constant channel's mask is zero: scored once, by the zero image
        if keep is not None:
            varying &= keep[b, c0:c0 + step]
        idx = varying.nonzero()[:, 0]
        if idx.numel():
            mask = (up[idx] - lo[idx, None, None]) / (hi[idx] - lo[idx] + MASK_EPS)[:, None, None]
            yield idx + c0, mask[:, None]


def channel_scores(model: nn.Module, x: Tensor, activation: Tensor, scores: _Scores, zero_scores: Tensor,
                   batch: int, max_channels: int | None = None) -> Tensor:
    """``s[r, b, c]``: the target score of image ``b`` multiplied by channel ``c``'s mask.

    The mask is the channel upsampled to the image (bilinear, ``align_corners=True``) and
    min-max normalised, ``(U - min U) / (max U - min U + 1e-8)``. Channels with a constant
    ``U`` take ``zero_scores`` (their mask is zero); with ``max_channels``, only the
    ``max_channels`` channels of largest energy ``sum_hw A_c^2`` of each image are scored and
    the others get ``-inf`` (weight 0 after the softmax). The masked images of all images go
    through the model ``batch`` at a time. ``(R, B, C)`` float32.
    """
    B, C = activation.shape[:2]
    a = activation.float()
    size = (int(x.shape[-2]), int(x.shape[-1]))
    s = zero_scores[:, :, None].expand(scores.rounds, B, C).clone()
    keep = None
    if max_channels is not None and max_channels < C:
        keep = torch.zeros((B, C), dtype=torch.bool, device=a.device)
        keep.scatter_(1, a.square().sum(dim=(2, 3)).topk(max_channels, dim=1).indices, True)
        s[:, ~keep] = float("-inf")
    finite = torch.ones((), dtype=torch.bool, device=s.device)
    pending: list[tuple[Tensor, Tensor, Tensor]] = []  # (images, channels, masked inputs)
    count = 0

    def run(n: int) -> None:
        nonlocal pending, count
        rows, chans, inputs = (torch.cat(parts) for parts in zip(*pending))
        got = scores(model(inputs[:n]), rows[:n])
        finite.logical_and_(torch.isfinite(got).all())
        s[:, rows[:n], chans[:n]] = got.to(s.device)
        pending = [(rows[n:], chans[n:], inputs[n:])] if rows.shape[0] > n else []
        count = rows.shape[0] - n

    for b in range(B):
        for chans, masks in _image_masks(a, b, size, keep):
            for i in range(0, chans.shape[0], batch):
                piece = chans[i:i + batch]
                pending.append((torch.full_like(piece, b), piece, x[b] * masks[i:i + batch].to(x.dtype)))
                count += piece.shape[0]
                while count >= batch:
                    run(batch)
    if count:
        run(count)
    if not bool(finite & torch.isfinite(zero_scores).all()):
        raise ValueError("score_cam: the model returned NaN or infinite scores for masked images; "
                         "Score-CAM needs finite target scores (check the model and the input)")
    return s


def scorecam_map(activation: Tensor, s: Tensor, eigen_smooth: bool = False) -> Tensor:
    """``M = ReLU(sum_c w_c A_c)`` with ``w = softmax_c(s)`` per image and class: ``(B, C, h, w)``
    activations and ``(R, B, C)`` scores to ``(R, B, h, w)`` maps. ``eigen_smooth``:
    pytorch-grad-cam's option, :func:`camfast.methods.eigencam.eigen_projection` of ``w_c A_c``
    instead of the channel sum."""
    w = torch.softmax(s, dim=-1)
    a = activation.float()
    if not eigen_smooth:
        return torch.einsum("rbc,bchw->rbhw", w, a).clamp_min(0)
    terms = w[..., None, None] * a[None]
    return eigen_projection(terms.flatten(0, 1)).reshape(*s.shape[:2], *a.shape[2:]).clamp_min(0)


@register("score-cam", display="Score-CAM", kind="forward-only", compat="ScoreCAM",
          summary="channel weights from the softmax of the scores of the image masked by each channel, "
                  "one layer (Wang et al. 2020)")
def score_cam(model, x, target=None, layer=None, output_size=None, *, batch_size=None, max_channels=None,
              eigen_smooth=False, return_layers=False, reshape_transform=None, output_fn=None):
    """Score-CAM: ``M = ReLU(sum_c w_c A_c)``, ``w = softmax_c(s)``, ``s_c`` the target score of
    the image multiplied by channel ``c``'s upsampled, min-max normalised activation
    (:func:`channel_scores`, :func:`scorecam_map`). No gradient is computed.

    Args:
        model, x, target, output_size, return_layers, reshape_transform, output_fn: as for
            :func:`camfast.grad_cam`. Several classes per image cost no more forwards than
            one: each masked image's output serves all of them.
        layer: a module name or module (default the deepest of ``camfast.find_layers``), or
            a list of layers, each scored with its own ``C_l`` masked forwards per image and
            fused by max.
        batch_size: masked images per forward (default :func:`default_batch_size`).
        max_channels: score only the ``max_channels`` channels of largest energy
            ``sum_hw A_c^2`` per image (the others get weight 0): about ``C / max_channels``
            times fewer forwards, not the exact map (docs/methods.md gives the measured error).
        eigen_smooth: pytorch-grad-cam's ``eigen_smooth`` (the first-principal-component
            projection of ``w_c A_c`` instead of its channel sum).

    Returns:
        ``(B, H, W)`` float32 in [0, 1], or a :class:`~camfast.methods.engine.CAMResult`.

    Raises:
        ValueError: the model returned a NaN or infinite score for a masked image.

    Example:
        >>> cams = camfast.score_cam(model.eval(), images, layer="layer4", batch_size=128)
    """
    x = check_input(x)
    size = result_size(x, output_size)
    check_layer_choice(layer)
    batch_size = _positive_int(batch_size, "batch_size")
    max_channels = _positive_int(max_channels, "max_channels")
    if not isinstance(eigen_smooth, bool):
        raise TypeError(f"eigen_smooth must be a bool, got {type(eigen_smooth).__name__}")
    chosen = resolve_layers(model, default_layer(model) if layer is None else layer, "layer")
    acts, logits = layer_activations(model, x, chosen, reshape_transform, output_fn)
    idx = target_classes(logits, target, model)
    scores = _Scores(target, idx, int(x.shape[0]), output_fn)
    if scores.rounds == 0:  # no image has a class: nothing to score
        maps = [a.new_zeros((0, *a.shape[:1], *a.shape[2:]), dtype=torch.float32) for a in acts]
        return assemble_cam([name for name, _ in chosen], maps, logits, idx, size, "max", return_layers)
    # the masked forwards run as the CAM forward does: unwrapped, in eval mode (a training-mode
    # model's BatchNorm statistics stay as they are), in the model's dtype
    with cam_mode(model) as net, torch.inference_mode(False), torch.no_grad():
        xin = input_for(net, x.detach().clone() if x.is_inference() else x.detach())
        zero_scores, per_image = _zero_image_scores(net, xin, scores)
        batch = batch_size or default_batch_size(x.device, per_image)
        maps = [scorecam_map(a, channel_scores(net, xin, a, scores, zero_scores, batch, max_channels), eigen_smooth)
                for a in acts]
    if not isinstance(idx, ClassSets):
        maps = [m[0] for m in maps]
    return assemble_cam([name for name, _ in chosen], maps, logits, idx, size, "max", return_layers)

