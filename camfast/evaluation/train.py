"""A small CPU training that compares GAP, TAP and Puzzle-CAM classifiers for WSOL.

``python -m camfast.train`` trains, on the same data (:class:`camfast.evaluation.datasets.SyntheticWSOL`)
and with the same budget (epochs, batch size, Adam with a cosine-decayed learning rate, initial
weights):

* ``gap``: a small CNN, global average pooling, a bias-free linear classifier (the CAM
  baseline), cross-entropy loss;
* ``tap``: the same with :class:`camfast.nn.ThresholdedAvgPool2d` (Bae et al. 2020),
  cross-entropy loss;
* ``puzzle``: the same network as ``gap`` trained with the Puzzle-CAM loss (Jo & Yu 2021:
  multilabel soft margin on the full image and on the merged 2x2 tiles, plus
  ``alpha * L1`` between the two class maps), :func:`camfast.puzzle.puzzle_step`.

Each prints progress (iteration, loss, images/s), writes ``<out>/<method>.pt`` atomically
(temporary file then ``os.replace``) after every epoch and, with ``--resume``, continues
from it (a checkpoint made with another configuration is not resumed: training starts
over, with a message). At the end each model is scored on the held-out split with
:mod:`camfast.metrics` (:func:`evaluate`: top-1, GT-known localisation at the fixed CAM
threshold, MaxBoxAccV2 and PxAP of its CAM; for ``tap`` also NWC + PaS as the paper
pairs them). ``--quick`` is a seconds-long smoke run. The full benchmark table over every
CAM method is ``camfast eval synthetic`` (:mod:`camfast.wsol`).

The network (:class:`TinyCAMNet`): ``stride=8`` (default, for 64x64 images) is four
conv-BatchNorm-ReLU stages with three 2x2 max-pools, so the CAM is 8x8 and every stage is a
layer for Zoom-CAM / LayerCAM and a stride-8 shape layer for rCAM; ``stride=4`` is the
earlier three-pool-free variant for 32x32 images. BatchNorm is what lets the Puzzle-CAM
classifier learn from scratch here: see ``README.md`` (section "Training-time methods").
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camfast.evaluation.datasets import SyntheticWSOL
from camfast.puzzle import PuzzleCAMLoss, puzzle_step
from camfast.utils.io import atomic_path

__all__ = ["METHODS", "CheckpointError", "TinyCAMNet", "TrainConfig", "TrainResult", "build_model", "evaluate",
           "load_model_checkpoint", "main", "make_data", "read_checkpoint", "train"]

METHODS = ("gap", "tap", "puzzle")
# config keys that do not change what is trained (a checkpoint made under other values is resumable)
_RUN_ONLY_KEYS = ("log_every", "max_iterations")


class TinyCAMNet(nn.Module):
    """A small CNN, then global pooling, then a bias-free linear classifier.

    ``forward`` returns logits ``(B, K)``; :meth:`class_maps` the class maps ``(B, K, h, w)``
    (``F = W * features``, a 1x1 convolution with the classifier's weight, so ``GAP(F)``
    equals the logits when ``pool`` is average pooling: the Puzzle-CAM model contract).

    Args:
        num_classes: ``K``.
        pool: any module mapping ``(B, C, h, w)`` to ``(B, C)`` or ``(B, C, 1, 1)``; default
            ``nn.AdaptiveAvgPool2d(1)`` (GAP).
        width: channels of the middle stages (the last has ``2 * width``).
        stride: 8 (four conv stages, three max-pools: ``H/8`` maps) or 4 (two max-pools).
        batch_norm: a BatchNorm after every convolution (then the convolutions have no bias).
    """

    def __init__(self, num_classes: int, pool: nn.Module | None = None, width: int = 32, stride: int = 8,
                 batch_norm: bool = True) -> None:
        super().__init__()
        if stride not in (4, 8):
            raise ValueError(f"stride must be 4 or 8, got {stride!r}")
        if isinstance(width, bool) or not isinstance(width, int) or width < 2:
            raise ValueError(f"width must be an int >= 2, got {width!r}")

        def stage(cin: int, cout: int) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=not batch_norm)]
            if batch_norm:
                layers.append(nn.BatchNorm2d(cout))
            return layers + [nn.ReLU(inplace=True)]

        w = width
        if stride == 8:
            layers = [*stage(3, w // 2), nn.MaxPool2d(2), *stage(w // 2, w), nn.MaxPool2d(2),
                      *stage(w, 2 * w), nn.MaxPool2d(2), *stage(2 * w, 2 * w)]
        else:
            layers = [*stage(3, w // 2), *stage(w // 2, w), nn.MaxPool2d(2), *stage(w, w), nn.MaxPool2d(2),
                      *stage(w, 2 * w)]
        self.stride = stride
        self.features = nn.Sequential(*layers)
        self.pool = pool if pool is not None else nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))

    def class_maps(self, x: Tensor) -> Tensor:
        return torch.einsum("bchw,kc->bkhw", self.features(x), self.fc.weight)


class ClassMaps(nn.Module):
    """Adapter: ``model(x)`` returns ``net.class_maps(x)`` (the :mod:`camfast.puzzle` contract)."""

    def __init__(self, net: TinyCAMNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net.class_maps(x)


@dataclass
class TrainConfig:
    """The shared budget and data: every method gets the same data, epochs, batch size and optimiser."""

    epochs: int = 4
    n_train: int = 2048
    n_val: int = 512
    size: int = 64
    num_classes: int = 6
    batch_size: int = 32
    lr: float = 3e-3
    width: int = 32
    stride: int = 8
    batch_norm: bool = True
    seed: int = 0
    tap_theta: float = 0.1
    puzzle_alpha_max: float = 4.0
    log_every: int = 20
    max_iterations: int | None = None  # stop early (smoke runs); the schedule still uses the full length

    @classmethod
    def quick(cls, **kw) -> "TrainConfig":
        """A seconds-long smoke configuration (32x32, 64 images, width 8)."""
        base = dict(epochs=2, n_train=64, n_val=32, size=32, batch_size=16, width=8, lr=1e-2, log_every=2)
        base.update(kw)
        return cls(**base)

    def trained_keys(self) -> dict:
        """The fields that decide what a checkpoint holds."""
        return {k: v for k, v in asdict(self).items() if k not in _RUN_ONLY_KEYS}


@dataclass
class TrainResult:
    method: str
    start_iteration: int
    iteration: int
    losses: list[float] = field(default_factory=list)
    checkpoint: str = ""
    skipped: str = ""
    seconds: float = 0.0          # spent training in this call
    total_seconds: float | None = None  # all calls together (None: a checkpoint that does not record it)


def make_data(cfg: TrainConfig, split: str = "train") -> SyntheticWSOL:
    """The synthetic set of ``cfg``: ``n_train`` images of the ``train`` split, or ``n_val`` of another."""
    n = cfg.n_train if split == "train" else cfg.n_val
    return SyntheticWSOL(n, size=cfg.size, seed=cfg.seed, num_classes=cfg.num_classes, split=split)


def build_model(method: str, cfg: TrainConfig) -> TinyCAMNet:
    """The untrained network of ``method`` (same initial weights for every method)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}; got {method!r}")
    torch.manual_seed(cfg.seed)
    pool = None
    if method == "tap":
        from camfast.nn import ThresholdedAvgPool2d

        pool = ThresholdedAvgPool2d(cfg.tap_theta)
    return TinyCAMNet(cfg.num_classes, pool, cfg.width, cfg.stride, cfg.batch_norm)


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unreadable, truncated, not a camfast training
    checkpoint, or holding objects other than tensors and plain data (never unpickled)."""


_CHECKPOINT_KEYS = ("method", "model", "optimizer", "iteration", "config")


def read_checkpoint(path: str | os.PathLike) -> dict:
    """A training checkpoint written by :func:`train`, loaded with ``torch.load(weights_only=True)``.

    Only tensors and plain containers are unpickled, so a crafted file cannot run code.

    Raises:
        CheckpointError: the file is unreadable, truncated or corrupt, holds anything else
            (the message names the path and the cause).
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():  # a garbage file's "pickle protocol" warning: the error says it
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # truncated zip, UnpicklingError (refused globals), EOFError, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"{path}: not a readable camfast training checkpoint ({type(e).__name__}"
                              f"{': ' + first if first else ''})") from e
    if not isinstance(state, dict) or any(k not in state for k in _CHECKPOINT_KEYS):
        raise CheckpointError(f"{path}: not a camfast training checkpoint (expected a dict with "
                              f"{', '.join(_CHECKPOINT_KEYS)})")
    return state


def load_model_checkpoint(method: str, cfg: TrainConfig, path: str | os.PathLike) -> TinyCAMNet:
    """The trained network of ``method`` from its checkpoint, in eval mode.

    Raises:
        CheckpointError: the file is not a readable checkpoint of ``method`` under ``cfg``.
    """
    net = build_model(method, cfg)
    state = read_checkpoint(path)
    try:
        net.load_state_dict(state["model"])
    except (RuntimeError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: its weights do not fit the {method} network of this configuration "
                              f"({str(e).splitlines()[0]})") from e
    return net.eval()


def _save_atomic(obj: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def train(method: str, cfg: TrainConfig, out_dir: str | os.PathLike, resume: bool = False,
          data: SyntheticWSOL | None = None, log=print) -> TrainResult:
    """Train one method; checkpoint ``<out_dir>/<method>.pt`` after each epoch (and at a stop).

    With ``resume=True`` and a checkpoint of the same configuration present, the model,
    optimiser and iteration are restored and training continues from the saved iteration
    (the data order of each epoch depends only on the seed and the epoch, so a resumed run
    sees the same batches); a finished checkpoint returns at once. A checkpoint of another
    configuration, or one that cannot be read (truncated, corrupt, holding anything but
    tensors and plain data: it is loaded with ``weights_only=True``, never unpickled), is
    reported by path and ignored: training starts over and overwrites it.

    Args:
        method: ``"gap"``, ``"tap"`` or ``"puzzle"``.
        cfg: the shared budget.
        out_dir: the checkpoint folder.
        resume: continue from the checkpoint.
        data: the training set (anything with ``images (N, 3, S, S)`` and ``labels (N,)``);
            default :func:`make_data` ``(cfg)``.
        log: called with each progress line.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}; got {method!r}")
    ckpt_path = Path(out_dir) / f"{method}.pt"
    net = build_model(method, cfg)
    data = data if data is not None else make_data(cfg)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    per_epoch = len(data) // cfg.batch_size
    if per_epoch == 0:
        raise ValueError(f"batch_size {cfg.batch_size} is larger than the training set ({len(data)})")
    total = per_epoch * cfg.epochs
    stop = total if cfg.max_iterations is None else min(total, cfg.max_iterations)
    it = 0
    prior_seconds: float | None = 0.0
    state = None
    if resume and ckpt_path.exists():
        try:
            state = read_checkpoint(ckpt_path)
        except CheckpointError as e:
            log(f"[{method}] {e}: training from scratch")
    if state is not None:
        if state.get("method") != method:
            raise ValueError(f"{ckpt_path} holds method {state.get('method')!r}, not {method!r}")
        saved = {k: v for k, v in dict(state.get("config") or {}).items() if k not in _RUN_ONLY_KEYS}
        if saved != cfg.trained_keys():
            diff = sorted(k for k in set(saved) | set(cfg.trained_keys()) if saved.get(k) != cfg.trained_keys().get(k))
            log(f"[{method}] {ckpt_path} was made with another configuration ({', '.join(diff)} differ): "
                "training from scratch")
        else:
            try:
                net.load_state_dict(state["model"])
                opt.load_state_dict(state["optimizer"])
                it = int(state["iteration"])
                prior_seconds = state.get("seconds")
                log(f"[{method}] resumed from {ckpt_path} at iteration {it}/{total}")
            except (RuntimeError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
                log(f"[{method}] {ckpt_path}: its state does not fit this network and optimiser "
                    f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}): training from scratch")
                net = build_model(method, cfg)
                opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
                it, prior_seconds = 0, 0.0
    start = it
    loss_fn = PuzzleCAMLoss(alpha_max=cfg.puzzle_alpha_max) if method == "puzzle" else None
    maps_model = ClassMaps(net)
    images, labels = data.images, data.labels
    y1h = F.one_hot(labels, cfg.num_classes).float()
    losses: list[float] = []
    net.train()
    t0, seen = time.perf_counter(), 0

    def checkpoint() -> None:
        _save_atomic({"method": method, "model": net.state_dict(), "optimizer": opt.state_dict(),
                      "iteration": it, "total": total, "config": asdict(cfg),
                      "seconds": None if prior_seconds is None else prior_seconds + time.perf_counter() - t0},
                     ckpt_path)

    while it < stop:
        epoch, offset = divmod(it, per_epoch)
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
        for k in range(offset, per_epoch):
            if it >= stop:
                break
            idx = order[k * cfg.batch_size:(k + 1) * cfg.batch_size]
            x, y = images[idx], labels[idx]
            for group in opt.param_groups:  # cosine decay, a function of the iteration (resumes exactly)
                group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * it / total))
            if loss_fn is not None:
                res = puzzle_step(maps_model, x, y1h[idx], loss_fn, it, total, optimizer=opt)
                loss = float(res.total.detach())
                extra = (f" cls {float(res.cls.detach()):.4f} p_cls {float(res.p_cls.detach()):.4f}"
                         f" re {float(res.re.detach()):.4f} alpha {res.alpha:.2f}")
            else:
                out = F.cross_entropy(net(x), y)
                opt.zero_grad(set_to_none=True)
                out.backward()
                opt.step()
                loss, extra = float(out.detach()), ""
            losses.append(loss)
            it += 1
            seen += x.shape[0]
            if it % cfg.log_every == 0 or it == stop:
                dt = time.perf_counter() - t0
                log(f"[{method}] epoch {it / per_epoch:5.2f} it {it}/{total} loss {loss:.4f}{extra} "
                    f"{seen / max(dt, 1e-9):.0f} img/s")
        if it % per_epoch == 0 or it == stop:
            checkpoint()
    if not ckpt_path.exists():  # resumed a finished run under a different path layout: keep one on disk
        checkpoint()
    net.eval()
    spent = time.perf_counter() - t0
    return TrainResult(method, start, it, losses, str(ckpt_path), seconds=spent,
                       total_seconds=None if prior_seconds is None else prior_seconds + spent)


def evaluate(net: TinyCAMNet, data: SyntheticWSOL, threshold: float = 0.2, standard: str = "max", q: float = 90,
             clamp_negative_weights: bool = False, batch_size: int = 128) -> dict[str, float]:
    """Score the CAM of ``net`` on ``data`` with :mod:`camfast.metrics` (percent).

    Returns ``top1`` (classification), ``gt_known_loc`` (IoU >= 0.5 at the fixed CAM
    ``threshold``; ``standard="percentile"`` thresholds at ``threshold * P_q`` instead of
    ``threshold * max``: PaS), ``max_box_acc_v2`` and ``pxap`` (both threshold-free).
    """
    import camfast
    from camfast.evaluation import metrics

    if standard not in ("max", "percentile"):
        raise ValueError(f"standard must be 'max' or 'percentile', got {standard!r}")
    net.eval()
    gt_known = metrics.GTKnownLoc(cam_threshold=threshold)
    v2, pxap = metrics.MaxBoxAccV2(), metrics.PxAP()
    correct = 0
    for s in range(0, len(data), batch_size):
        x, y = data.images[s:s + batch_size], data.labels[s:s + batch_size]
        boxes, masks = data.boxes[s:s + batch_size], data.masks[s:s + batch_size]
        with torch.no_grad():
            correct += int((net(x).argmax(1) == y).sum())
        cams = camfast.normalize(camfast.cam(net, x, target=y, clamp_negative_weights=clamp_negative_weights))
        box_maps = cams if standard == "max" else camfast.normalize(cams, method="percentile", q=q)
        gt_known.update(box_maps, boxes)
        v2.update(cams, boxes)
        pxap.update(cams, masks)
    return {"top1": 100.0 * correct / len(data), "gt_known_loc": gt_known.compute(),
            "max_box_acc_v2": v2.compute(), "pxap": pxap.compute()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m camfast.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of gap,tap,puzzle")
    p.add_argument("--out", default="runs/train_wsol", help="checkpoint folder")
    p.add_argument("--resume", action="store_true", help="continue from <out>/<method>.pt when present")
    p.add_argument("--quick", action="store_true", help="seconds-long smoke run (tiny data, few iterations)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch.set_num_threads")
    p.add_argument("--no-eval", action="store_true", help="skip the held-out scoring")
    a = p.parse_args(argv)
    cfg = TrainConfig.quick(seed=a.seed) if a.quick else TrainConfig(seed=a.seed)
    for name in ("epochs", "batch_size", "lr"):
        value = getattr(a, name)
        if value is not None:
            if value <= 0:
                p.error(f"--{name.replace('_', '-')} must be positive, got {value}")
            setattr(cfg, name, value)
    if a.threads:
        torch.set_num_threads(a.threads)
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        p.error(f"unknown method(s) {bad}; choose from {', '.join(METHODS)}")
    data, val = make_data(cfg, "train"), make_data(cfg, "val")
    rows = []
    for m in methods:
        t = time.perf_counter()
        res = train(m, cfg, a.out, resume=a.resume, data=data)
        line = f"{m:7s} {res.iteration} it in {time.perf_counter() - t:.1f} s"
        if not a.no_eval:
            net = load_model_checkpoint(m, cfg, res.checkpoint)
            try:
                mas = evaluate(net, val)
                line += (f"  top1 {mas['top1']:.1f}  GT-known loc (MaS 0.2) {mas['gt_known_loc']:.1f}"
                         f"  MaxBoxAccV2 {mas['max_box_acc_v2']:.1f}  PxAP {mas['pxap']:.1f}")
                if m == "tap":
                    pas = evaluate(net, val, threshold=0.35, standard="percentile", clamp_negative_weights=True)
                    line += f"  (GT-known loc with NWC + PaS 0.35: {pas['gt_known_loc']:.1f})"
            except ImportError as e:
                line += f"  (no localisation score: {e})"
        rows.append(line)
    print("\n".join(["", "summary (held-out split, percent):"] + rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
