"""Reference (pure PyTorch) forward and backward of ``camfast::grad_weighted_map``.

With ``A`` the activation and ``G = dS/dA`` its gradient, both ``[B, C, H, W]``, sums
``sum_hw`` over one channel's ``H x W`` plane and ``S_c = sum_hw A_c``:

* ``zoom``      : ``M = ReLU(sum_c G_c * A_c)``            (Zoom-CAM, Shi et al. 2020; = HiResCAM)
* ``gradcam``   : ``M = ReLU(sum_c mean_hw(G_c) * A_c)``   (Grad-CAM, Selvaraju et al. 2017)
* ``layercam``  : ``M = ReLU(sum_c ReLU(G_c) * A_c)``      (LayerCAM, Jiang et al. 2021)
* ``gradcampp`` : ``M = ReLU(sum_c w_c * A_c)``, ``w_c = sum_hw ReLU(G) * a`` with
  ``a = G^2 / (2 G^2 + S_c G^3 + 1e-6)``, ``a = 0`` where ``G == 0``
  (Grad-CAM++, Chattopadhay et al. 2018, eq. 19; METHODS.md "More per-layer weightings")
* ``xgradcam``  : ``M = ReLU(sum_c w_c * A_c)``, ``w_c = sum_hw(G * A) / (S_c + 1e-7)``
  (XGrad-CAM, Fu et al. 2020; METHODS.md "More per-layer weightings")

The epsilons are pytorch-grad-cam 1.5.7's (``GWM_GRADCAMPP_EPS``, ``GWM_XGRADCAM_EPS`` in
``codes.json``); its ReLU sits on the channel sum, as here.

Backward, with ``gm = dM * [M > 0]`` (the ReLU mask read from the saved output) and
``T_c = sum_hw(gm * A_c)`` (the gradient of the loss with respect to ``w_c``):

* ``zoom``      : ``dA = gm * G``,        ``dG = gm * A``
* ``layercam``  : ``dA = gm * ReLU(G)``,  ``dG = gm * A * [G > 0]``
* ``gradcam``   : ``dA = gm * w``,        ``dG = T_c / (H * W)`` at every pixel
* ``gradcampp`` : with ``D = 2 G^2 + S_c G^3 + 1e-6`` and ``r = ReLU(G) * a`` (so ``w_c = sum_hw r``),
  ``dA = gm * w_c + T_c * Q_c`` where ``Q_c = dw_c/dS_c = -sum_hw r^2``, and
  ``dG = T_c * dr/dG = T_c * [G > 0] * a * (2 G^2 + 3e-6) / D``
* ``xgradcam``  : with ``k_c = T_c / (S_c + 1e-7)``, ``dA = gm * w_c + k_c * (G - w_c)``, ``dG = k_c * A``
"""

from __future__ import annotations

import torch
from torch import Tensor

from camfast.ops._spec import GWM_GRADCAMPP_EPS, GWM_MODES, GWM_XGRADCAM_EPS

_HW = (2, 3)


def _acc_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _unknown(mode: str) -> ValueError:
    return ValueError(f"mode must be one of {', '.join(map(repr, GWM_MODES))}; got {mode!r}")


def gradcampp_terms(a: Tensor, g: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Grad-CAM++'s per-pixel terms ``(a, D, S)`` of ``A = a``, ``G = g`` (in the accumulator
    dtype): ``a = G^2 / D`` (0 where ``G == 0``) with ``D = 2 G^2 + S G^3 + 1e-6`` and
    ``S = sum_hw A`` ``(B, C, 1, 1)``."""
    s = a.sum(dim=_HW, keepdim=True)
    g2 = g * g
    d = 2 * g2 + s * (g2 * g) + GWM_GRADCAMPP_EPS
    return torch.where(g != 0, g2 / d, 0.0), d, s


def _weights(a: Tensor, g: Tensor, mode: str) -> Tensor:
    # a, g already in the accumulator dtype: each input is converted once, so autograd of
    # forward() rounds each input's gradient once (a half-precision input converted on every
    # use would get one rounded gradient per use, summed in half precision).
    if mode == "zoom":
        return g
    if mode == "layercam":
        return g.relu()
    if mode == "gradcam":
        return g.mean(dim=_HW, keepdim=True)
    if mode == "gradcampp":
        alpha, _, _ = gradcampp_terms(a, g)
        return (g.relu() * alpha).sum(dim=_HW, keepdim=True)
    if mode == "xgradcam":
        return (g * a).sum(dim=_HW, keepdim=True) / (a.sum(dim=_HW, keepdim=True) + GWM_XGRADCAM_EPS)
    raise _unknown(mode)


def channel_weights(activation: Tensor, gradient: Tensor, mode: str) -> Tensor:
    """The weight ``f`` of ``M = ReLU(sum_c f * A_c)``, broadcastable to ``[B, C, H, W]``:
    ``G``, ``ReLU(G)`` or a per-channel ``w_c`` ``[B, C, 1, 1]``, in the accumulator dtype."""
    return _weights(activation.to(_acc_dtype(activation)), gradient.to(_acc_dtype(gradient)), mode)


def forward(activation: Tensor, gradient: Tensor, mode: str) -> Tensor:
    """``[B,C,H,W], [B,C,H,W] -> [B,H,W]`` in the input dtype."""
    a = activation.to(_acc_dtype(activation))
    s = (_weights(a, gradient.to(_acc_dtype(gradient)), mode) * a).sum(dim=1)
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
        return grad_a, grad_g
    if mode == "layercam":
        grad_a.copy_(gm * g.relu())
        grad_g.copy_(gm * a * (g > 0))
        return grad_a, grad_g
    if mode not in ("gradcam", "gradcampp", "xgradcam"):
        raise _unknown(mode)
    w = _weights(a, g, mode)
    t = (gm * a).sum(dim=_HW, keepdim=True)
    if mode == "gradcam":
        grad_a.copy_(gm * w)
        grad_g.copy_((t / (a.shape[2] * a.shape[3])).expand_as(g))
    elif mode == "gradcampp":
        alpha, d, _ = gradcampp_terms(a, g)
        r = g.relu() * alpha
        grad_a.copy_(gm * w - t * (r * r).sum(dim=_HW, keepdim=True))
        grad_g.copy_(t * torch.where(g > 0, alpha * (2 * g * g + 3 * GWM_GRADCAMPP_EPS) / d, 0.0))
    else:
        k = t / (a.sum(dim=_HW, keepdim=True) + GWM_XGRADCAM_EPS)
        grad_a.copy_(gm * w + k * (g - w))
        grad_g.copy_(k * a)
    return grad_a, grad_g
