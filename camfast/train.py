"""A small CPU training that compares GAP, TAP and Puzzle-CAM classifiers for WSOL.

``python -m camfast.train`` trains, on the same synthetic data and with the same budget
(epochs, batch size, optimiser, learning rate):

* ``gap``: a tiny CNN, global average pooling, a linear classifier (the CAM baseline);
* ``tap``: the same with :class:`camfast.nn.ThresholdedAvgPool2d` (Bae et al. 2020), skipped
  with a message while ``camfast.nn`` is not available;
* ``puzzle``: the same as ``gap`` trained with the Puzzle-CAM loss (Jo & Yu 2021).

Each prints progress (iteration, loss, images/s), writes ``<out>/<method>.pt`` atomically
(temporary file then ``os.replace``) after every epoch and, with ``--resume``, continues
from it. At the end each model is scored on a held-out synthetic split: top-1 accuracy and
GT-known localisation (IoU >= 0.5 between the CAM's box and the object's box; CAM with
``camfast.cam``, boxes with ``camfast.boxes_from_cam``: MaS 0.2 for all, and PaS (q=90,
0.35) with NWC for ``tap`` as the paper pairs them). ``--quick`` is a seconds-long smoke run.

The data (:class:`SyntheticWSOL`) is a stand-in until the evaluation issue brings real
datasets: each image holds one grey rectangle (the object, whose box is the target) with
a small coloured square inside it (the part whose colour decides the class) on a noisy
background, so a classifier can succeed by looking at the part only: the failure mode
TAP and Puzzle-CAM address.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camfast.puzzle import PuzzleCAMLoss, puzzle_step

__all__ = ["SyntheticWSOL", "TinyCAMNet", "TrainConfig", "evaluate", "main", "train"]

METHODS = ("gap", "tap", "puzzle")
# Part colours (RGB in [0, 1]) that decide the class; the object body is grey for all.
_PART_COLOURS = torch.tensor([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.1, 0.1, 1.0], [1.0, 1.0, 0.1],
                              [1.0, 0.1, 1.0], [0.1, 1.0, 1.0]])


class SyntheticWSOL:
    """A deterministic synthetic WSOL set: ``images (N, 3, S, S)``, ``labels (N,)``, ``boxes (N, 4)``.

    Boxes are inclusive pixel coordinates ``(x0, y0, x1, y1)`` of the object rectangle.
    The same ``seed`` always gives the same data.
    """

    def __init__(self, n: int, size: int = 32, num_classes: int = 4, seed: int = 0) -> None:
        if not 2 <= num_classes <= len(_PART_COLOURS):
            raise ValueError(f"num_classes must be in [2, {len(_PART_COLOURS)}], got {num_classes}")
        if size < 16:
            raise ValueError(f"size must be >= 16, got {size}")
        g = torch.Generator().manual_seed(seed)
        self.num_classes = num_classes
        self.labels = torch.randint(num_classes, (n,), generator=g)
        images = 0.25 + 0.1 * torch.randn(n, 3, size, size, generator=g)
        boxes = torch.empty(n, 4, dtype=torch.int64)
        part = max(2, size // 8)
        for i in range(n):
            h = int(torch.randint(size // 3, size // 2 + 4, (1,), generator=g))
            w = int(torch.randint(size // 3, size // 2 + 4, (1,), generator=g))
            y0 = int(torch.randint(0, size - h + 1, (1,), generator=g))
            x0 = int(torch.randint(0, size - w + 1, (1,), generator=g))
            images[i, :, y0:y0 + h, x0:x0 + w] = 0.6 + 0.05 * torch.randn(3, h, w, generator=g)
            py = y0 + int(torch.randint(0, h - part + 1, (1,), generator=g))
            px = x0 + int(torch.randint(0, w - part + 1, (1,), generator=g))
            images[i, :, py:py + part, px:px + part] = _PART_COLOURS[self.labels[i], :, None, None]
            boxes[i] = torch.tensor([x0, y0, x0 + w - 1, y0 + h - 1])
        self.images = images.clamp_(0, 1)
        self.boxes = boxes

    def __len__(self) -> int:
        return int(self.labels.shape[0])


class TinyCAMNet(nn.Module):
    """A small CNN (stride 4) then global pooling then a bias-free linear classifier.

    ``forward`` returns logits ``(B, K)``; :meth:`class_maps` the maps ``(B, K, h, w)``
    (``F = W * features``, a 1x1 convolution with the classifier's weight, so ``GAP(F)``
    equals the logits when ``pool`` is average pooling). ``pool`` is any module mapping
    ``(B, C, h, w)`` to ``(B, C)`` or ``(B, C, 1, 1)``.
    """

    def __init__(self, num_classes: int, pool: nn.Module | None = None, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width // 2, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width // 2, width, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.pool = pool if pool is not None else nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))

    def class_maps(self, x: Tensor) -> Tensor:
        return torch.einsum("bchw,kc->bkhw", self.features(x), self.fc.weight)


class _Maps(nn.Module):
    """Adapter: ``model(x)`` returns class maps (the :func:`camfast.puzzle.puzzle_step` contract)."""

    def __init__(self, net: TinyCAMNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net.class_maps(x)


def _tap_pool(theta: float) -> nn.Module | None:
    try:
        from camfast.nn import ThresholdedAvgPool2d  # type: ignore[attr-defined]
    except ImportError:
        return None
    return ThresholdedAvgPool2d(theta)


@dataclass
class TrainConfig:
    """The shared budget: every method gets the same data, epochs, batch size and optimiser."""

    epochs: int = 4
    n_train: int = 2048
    n_val: int = 512
    size: int = 32
    num_classes: int = 4
    batch_size: int = 32
    lr: float = 3e-3
    width: int = 32
    seed: int = 0
    tap_theta: float = 0.1
    puzzle_alpha_max: float = 4.0
    log_every: int = 20
    max_iterations: int | None = None  # stop early (smoke runs); the schedule still uses the full length


@dataclass
class TrainResult:
    method: str
    start_iteration: int
    iteration: int
    losses: list[float] = field(default_factory=list)
    checkpoint: str = ""
    skipped: str = ""


def _build(method: str, cfg: TrainConfig) -> TinyCAMNet | None:
    torch.manual_seed(cfg.seed)  # same initial weights for every method
    if method == "tap":
        pool = _tap_pool(cfg.tap_theta)
        if pool is None:
            return None
        return TinyCAMNet(cfg.num_classes, pool, cfg.width)
    return TinyCAMNet(cfg.num_classes, None, cfg.width)


def _save_atomic(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(method: str, cfg: TrainConfig, out_dir: str | os.PathLike, resume: bool = False,
          data: SyntheticWSOL | None = None, log=print) -> TrainResult:
    """Train one method; checkpoint ``<out_dir>/<method>.pt`` after each epoch (and at a stop).

    With ``resume=True`` and a checkpoint present, the model, optimiser and iteration are
    restored and training continues from the saved iteration (the data order of each epoch
    depends only on the seed and the epoch, so a resumed run sees the same batches).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}; got {method!r}")
    ckpt_path = Path(out_dir) / f"{method}.pt"
    net = _build(method, cfg)
    if net is None:
        msg = "camfast.nn.ThresholdedAvgPool2d is not available in this build: skipping 'tap'"
        log(f"[{method}] {msg}")
        return TrainResult(method, 0, 0, skipped=msg)
    data = data if data is not None else SyntheticWSOL(cfg.n_train, cfg.size, cfg.num_classes, cfg.seed)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    per_epoch = len(data) // cfg.batch_size
    if per_epoch == 0:
        raise ValueError(f"batch_size {cfg.batch_size} is larger than the training set ({len(data)})")
    total = per_epoch * cfg.epochs
    stop = total if cfg.max_iterations is None else min(total, cfg.max_iterations)
    it = 0
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if state.get("method") != method:
            raise ValueError(f"{ckpt_path} holds method {state.get('method')!r}, not {method!r}")
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        it = int(state["iteration"])
        log(f"[{method}] resumed from {ckpt_path} at iteration {it}/{total}")
    start = it
    loss_fn = PuzzleCAMLoss(alpha_max=cfg.puzzle_alpha_max) if method == "puzzle" else None
    maps_model = _Maps(net)
    y1h = F.one_hot(data.labels, cfg.num_classes).float()
    losses: list[float] = []
    net.train()
    t0, seen = time.perf_counter(), 0

    def checkpoint() -> None:
        _save_atomic({"method": method, "model": net.state_dict(), "optimizer": opt.state_dict(),
                      "iteration": it, "config": asdict(cfg)}, ckpt_path)

    while it < stop:
        epoch, offset = divmod(it, per_epoch)
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
        for k in range(offset, per_epoch):
            if it >= stop:
                break
            idx = order[k * cfg.batch_size:(k + 1) * cfg.batch_size]
            x, y = data.images[idx], data.labels[idx]
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
    net.eval()
    return TrainResult(method, start, it, losses, str(ckpt_path))


def _iou(a: Tensor, b: Tensor) -> float:
    """IoU of inclusive boxes (the +1 pixel convention)."""
    ix = min(int(a[2]), int(b[2])) - max(int(a[0]), int(b[0])) + 1
    iy = min(int(a[3]), int(b[3])) - max(int(a[1]), int(b[1])) + 1
    inter = max(ix, 0) * max(iy, 0)
    area = lambda r: (int(r[2]) - int(r[0]) + 1) * (int(r[3]) - int(r[1]) + 1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def evaluate(net: TinyCAMNet, data: SyntheticWSOL, standard: str = "max", threshold: float = 0.2,
             q: float = 90, clamp_negative_weights: bool = False, batch_size: int = 128) -> dict[str, float]:
    """Top-1 accuracy and GT-known localisation accuracy (IoU >= 0.5) on ``data``."""
    import camfast
    from camfast.localization import boxes_from_cam

    net.eval()
    correct = hits = 0
    for s in range(0, len(data), batch_size):
        x, y, gt = data.images[s:s + batch_size], data.labels[s:s + batch_size], data.boxes[s:s + batch_size]
        with torch.no_grad():
            correct += int((net(x).argmax(1) == y).sum())
        cams = camfast.cam(net, x, target=y, clamp_negative_weights=clamp_negative_weights)
        for box, g in zip(boxes_from_cam(cams, threshold, standard=standard, q=q), gt):
            hits += int(box.shape[0] > 0 and _iou(box[0], g) >= 0.5)
    return {"top1": correct / len(data), "gt_known_loc": hits / len(data)}


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
    cfg = TrainConfig(seed=a.seed)
    if a.quick:
        cfg = TrainConfig(epochs=2, n_train=64, n_val=32, batch_size=16, width=8, lr=1e-2, log_every=2, seed=a.seed)
    for name in ("epochs", "batch_size", "lr"):
        if getattr(a, name) is not None:
            setattr(cfg, name, getattr(a, name))
    if a.threads:
        torch.set_num_threads(a.threads)
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        p.error(f"unknown method(s) {bad}; choose from {', '.join(METHODS)}")
    data = SyntheticWSOL(cfg.n_train, cfg.size, cfg.num_classes, cfg.seed)
    val = SyntheticWSOL(cfg.n_val, cfg.size, cfg.num_classes, cfg.seed + 10_000)
    rows = []
    for m in methods:
        t = time.perf_counter()
        res = train(m, cfg, a.out, resume=a.resume, data=data)
        if res.skipped:
            rows.append(f"{m:7s} skipped ({res.skipped})")
            continue
        line = f"{m:7s} {res.iteration} it in {time.perf_counter() - t:.1f} s"
        if not a.no_eval:
            net = _build(m, cfg)
            assert net is not None
            net.load_state_dict(torch.load(res.checkpoint, map_location="cpu", weights_only=False)["model"])
            try:
                mas = evaluate(net, val)
                line += f"  top1 {mas['top1']:.3f}  GT-known loc (MaS 0.2) {mas['gt_known_loc']:.3f}"
                pas = evaluate(net, val, standard="percentile", threshold=0.35, q=90,
                               clamp_negative_weights=(m == "tap"))
                line += f"  (PaS 0.35{'+NWC' if m == 'tap' else ''}) {pas['gt_known_loc']:.3f}"
            except ImportError as e:
                line += f"  (no localisation score: {e})"
        rows.append(line)
    print("\n".join(["", "summary:"] + rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
