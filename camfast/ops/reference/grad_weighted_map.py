"""Reference (pure PyTorch) forward and backward of ``camfast::grad_weighted_map``.

With ``A`` the activation and ``G = dS/dA`` its gradient, both ``[B, C, H, W]``:

* ``zoom``     : ``M = ReLU(sum_c G_c * A_c)``            (Zoom-CAM, Shi et al. 2020; = HiResCAM)
* ``gradcam``  : ``M = ReLU(sum_c mean_hw(G_c) * A_c)``   (Grad-CAM, Selvaraju et al. 2017)
* ``layercam`` : ``M = ReLU(sum_c ReLU(G_c) * A_c)``      (LayerCAM, Jiang et al. 2021)

Backward, with ``gm = dM * [M > 0]`` (the ReLU mask read from the saved output):

* ``zoom``     : ``dA = gm * G``,        ``dG = gm * A``
* ``layercam`` : ``dA = gm * ReLU(G)``,  ``dG = gm * A * [G > 0]``
* ``gradcam``  : ``dA = gm * w``,        ``dG = sum_hw(gm * A) / (H * W)`` at every pixel
"""

from __future__ import annotations

import torch
from torch import Tensor


def _acc_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def channel_weights(gradient: Tensor, mode: str) -> Tensor:
    """The per-activation weight ``f(G)``: ``G``, ``ReLU(G)`` or ``mean_hw(G)`` (broadcastable)."""
    g = gradient.to(_acc_dtype(gradient))
    if mode == "zoom":
        return g
    if mode == "layercam":
        return g.relu()
    if mode == "gradcam":
        return g.mean(dim=(2, 3), keepdim=True)
    raise ValueError(f"mode must be 'zoom', 'gradcam' or 'layercam'; got {mode!r}")


def forward(activation: Tensor, gradient: Tensor, mode: str) -> Tensor:
    """``[B,C,H,W], [B,C,H,W] -> [B,H,W]`` in the input dtype."""
    a = activation.to(_acc_dtype(activation))
    s = (channel_weights(gradient, mode) * a).sum(dim=1)
    return s.relu().to(activation.dtype)


def backward(grad_out: Tensor, activation: Tensor, gradient: Tensor, out: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    """Gradients ``(dA, dG)`` of ``forward`` given ``dM`` and the saved output ``M``."""
    acc = _acc_dtype(activation)
    gm = (grad_out.to(acc) * (out > 0)).unsqueeze(1)
    a = activation.to(acc)
    g = gradient.to(acc)
    grad_a = torch.empty_like(activation)
    grad_g = torch.empty_like(gradient)
    if mode == "zoom":
        grad_a.copy_(gm * g)
        grad_g.copy_(gm * a)
    elif mode == "layercam":
        grad_a.copy_(gm * g.relu())
        grad_g.copy_(gm * a * (g > 0))
    elif mode == "gradcam":
        grad_a.copy_(gm * channel_weights(gradient, mode))
        hw = a.shape[2] * a.shape[3]
        grad_g.copy_(((gm * a).sum(dim=(2, 3), keepdim=True) / hw).expand_as(g))
    else:
        raise ValueError(f"mode must be 'zoom', 'gradcam' or 'layercam'; got {mode!r}")
    return grad_a, grad_g
