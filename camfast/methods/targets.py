"""What a CAM method's ``target`` may be, parsed in one place for every method.

* None: each image's top class; an int (Python or numpy) or a 0-d tensor: that class for
  every image; one class per image (a sequence or 1-D integer tensor/array); class names
  (case-insensitive) when the model carries them (:func:`class_names_of`);
* callables taking one image's output and returning a scalar (pytorch-grad-cam's targets);
* several classes per image (:func:`is_multi_target`): a ``(B, K)`` integer tensor, or one
  sequence of classes per image (lengths may differ, even 0), parsed into :class:`ClassSets`
  (rounds of one class per image, so a gradient method runs one backward per round); or one
  sequence of callables per image.

What a gradient method differentiates is planned by :func:`score_plan` for every kind of
model output: class scores ``(B, K)``; dense scores ``(B, K, H, W)`` of a segmentation model
(a class ``k`` then scores its region, :class:`MaskTarget`); a detector's per-image dicts
(:mod:`camfast.methods.detection`: ``target=None`` is every detection, one map each). Every
score is checked finite: a NaN or infinite model output is a ``ValueError`` naming the image
and the class, never a NaN map.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from camfast.methods.detection import every_detection, is_detections

__all__ = ["ClassSets", "MaskTarget", "ScorePlan", "Target", "class_names_of", "class_sets", "each_class",
           "is_multi_target", "score_plan", "target_indices", "target_score"]

Target = int | Sequence[int] | Tensor | Callable[[Tensor], Tensor] | Sequence[Callable[[Tensor], Tensor]] | None


def class_names_of(model: nn.Module) -> list[str] | None:
    """The model's class names when it carries them (a ``class_names`` sequence, or a Hugging
    Face-style ``config.id2label``), for targets given by name."""
    names = getattr(model, "class_names", None)
    if isinstance(names, (list, tuple)) and names and all(isinstance(n, str) for n in names):
        return list(names)
    id2label = getattr(getattr(model, "config", None), "id2label", None)
    if isinstance(id2label, dict) and id2label:
        try:
            return [str(id2label[i]) for i in range(len(id2label))]
        except KeyError:
            return None
    return None


_TARGET_HELP = ("target must be None (each image's top class), a class index, one index per image "
                "(a sequence or 1-D integer tensor), a class name when the model has class names, or "
                "callables taking one image's output")


def _class_index(item: object, K: int, class_names: Sequence[str] | None) -> int:
    if isinstance(item, str):
        if not class_names:
            raise TypeError(f"target {item!r} is a name but the model has no class names; {_TARGET_HELP}")
        folded = {n.lower(): i for i, n in enumerate(class_names)}
        if item.lower() not in folded:
            close = [n for n in class_names if item.lower() in n.lower()][:5]
            raise ValueError(f"target: unknown class name {item!r}" + (f"; did you mean {close}?" if close else ""))
        return folded[item.lower()]
    if isinstance(item, bool) or not isinstance(item, numbers.Integral):
        raise TypeError(f"{_TARGET_HELP}; got {type(item).__name__} {item!r}")
    k = int(item)
    if not 0 <= k < K:
        raise ValueError(f"target class {k} out of range [0, {K})")
    return k


def target_score(logits: Tensor, target: Target,
                 class_names: Sequence[str] | None = None) -> tuple[Tensor, Tensor | None]:
    """The scalar to differentiate, ``sum_b target_b(logits_b)``, and the class indices.

    ``target``: None (each row's top class), a class index (Python or numpy integer), one
    class per row (a sequence or 1-D integer tensor/array), a class name or names (with
    ``class_names``, case-insensitive), or callables on one row's scores (one for all rows,
    or one per row; the indices are then None).
    """
    B, K = logits.shape
    if callable(target):
        target = [target] * B
    if isinstance(target, (list, tuple)) and target and all(callable(t) for t in target):
        if len(target) != B:
            raise ValueError(f"target: {len(target)} callables for a batch of {B}")
        return torch.stack([torch.as_tensor(t(logits[b])).sum() for b, t in enumerate(target)]).sum(), None
    if target is None:
        idx = logits.detach().argmax(dim=1)
    elif isinstance(target, (str, numbers.Integral)):
        idx = torch.full((B,), _class_index(target, K, class_names), dtype=torch.long, device=logits.device)
    else:
        if isinstance(target, Tensor) or hasattr(target, "__array__"):
            t = torch.as_tensor(target)
            if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool or t.dim() > 1:
                raise TypeError(f"{_TARGET_HELP}; got a {tuple(t.shape)} {t.dtype} tensor")
            items = t.reshape(-1).tolist()
            if t.dim() == 0:
                items = items * B
        elif isinstance(target, Sequence):
            items = list(target)
        else:
            raise TypeError(f"{_TARGET_HELP}; got {type(target).__name__}")
        if len(items) != B:
            raise ValueError(f"target: {len(items)} classes for a batch of {B} images; give one per image")
        idx = torch.tensor([_class_index(k, K, class_names) for k in items], dtype=torch.long, device=logits.device)
    return logits.gather(1, idx[:, None]).sum(), idx


def target_indices(logits: Tensor, target: Target, method: str,
                   class_names: Sequence[str] | None = None) -> Tensor:
    """``(B,)`` class indices for methods that take classes, not callables (``method`` names
    the caller in the error)."""
    if target is not None and (callable(target) or (isinstance(target, (list, tuple)) and target
                                                   and callable(target[0]))):
        raise TypeError(f"{method} takes class indices as target, not callables")
    _, idx = target_score(logits, target, class_names)
    assert idx is not None
    return idx


class ClassSets(NamedTuple):
    """Several classes per image (the all-class target forms), as rounds.

    Attributes:
        rounds: ``(R, B)`` long: ``rounds[j, b]`` is image ``b``'s ``j``-th class, ``-1`` past
            its last (``R`` the most classes any image has).
        counts: the number of classes of each image.
        ragged: the target was one list per image (results are lists of ``(K_b, H, W)``), not
            a ``(B, K)`` tensor (results ``(B, K, H, W)``).
    """

    rounds: Tensor
    counts: list[int]
    ragged: bool

    def assemble(self, per_round: Tensor) -> Tensor | list[Tensor]:
        """``(R, B, ...)`` per-round results -> ``(B, K, ...)`` or one ``(K_b, ...)`` per image."""
        if not self.ragged:
            return per_round.transpose(0, 1)
        return [per_round[: k, b] for b, k in enumerate(self.counts)]

    def indices(self) -> Tensor | list[Tensor]:
        """The classes in the result's layout: ``(B, K)`` or one ``(K_b,)`` tensor per image."""
        return self.assemble(self.rounds)


def _is_sequence(t: object) -> bool:
    return isinstance(t, (list, tuple, Tensor)) or (hasattr(t, "__array__") and not isinstance(t, (str, bytes)))


def is_multi_target(target: object) -> bool:
    """Whether ``target`` asks for several classes per image: a 2-D integer tensor/array
    ``(B, K)``, or one sequence of classes per image (lengths may differ, even be 0)."""
    if isinstance(target, Tensor) or (hasattr(target, "__array__") and not isinstance(target, (list, tuple))):
        return torch.as_tensor(target).dim() == 2
    return isinstance(target, (list, tuple)) and len(target) > 0 and all(_is_sequence(t) for t in target)


def class_sets(logits: Tensor, target: object, class_names: Sequence[str] | None = None) -> ClassSets:
    """Parse a multi-class ``target`` (:func:`is_multi_target`) against ``(B, num_classes)``
    scores: every class checked (index range, names), per image."""
    B, K = logits.shape
    if isinstance(target, Tensor) or (hasattr(target, "__array__") and not isinstance(target, (list, tuple))):
        t = torch.as_tensor(target)
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            raise TypeError(f"target: a (B, K) class tensor must hold integers, got {t.dtype}")
        if t.shape[0] != B:
            raise ValueError(f"target: a (B, K) class tensor needs B = {B} rows, got shape {tuple(t.shape)}")
        per_image, ragged = t.tolist(), False
    else:
        if len(target) != B:
            raise ValueError(f"target: {len(target)} class lists for a batch of {B} images; give one per image")
        per_image = [torch.as_tensor(t).reshape(-1).tolist() if not isinstance(t, (list, tuple)) else list(t)
                     for t in target]
        ragged = True
    idx = [[_class_index(k, K, class_names) for k in classes] for classes in per_image]
    counts = [len(c) for c in idx]
    R = max(counts, default=0)
    rounds = torch.full((R, B), -1, dtype=torch.long)
    for b, classes in enumerate(idx):
        if classes:
            rounds[: len(classes), b] = torch.tensor(classes)
    return ClassSets(rounds.to(logits.device), counts, ragged)


def each_class(single: Callable[[Tensor, Tensor], Tensor], x: Tensor, sets: ClassSets) -> Tensor:
    """``(R, B, ...)`` per-round maps for a method without a native all-class path:
    ``single(x, classes)`` runs once per round on the whole batch (an image without a class in
    that round takes class 0, and :meth:`ClassSets.assemble` drops its map), so each map
    equals the single-class call on the same batch exactly, whatever the method's batch-size
    sensitivity (a dense CRF amplifies last-bit differences of the forward)."""
    maps = [single(x, sets.rounds[j].clamp_min(0)) for j in range(sets.rounds.shape[0])]
    if not maps:  # no image has any class
        return x.new_zeros((0, x.shape[0], *x.shape[2:]), dtype=torch.float32)
    return torch.stack(maps)


# ------------------------------------------------------------------------------ score plans
class MaskTarget:
    """A region of a segmentation output as the target (pytorch-grad-cam's
    ``SemanticSegmentationTarget``, the same sum): ``S = sum_hw out[category, h, w] * mask[h, w]``
    on one image's ``(K, H, W)`` scores. ``mask`` None: the pixels where ``category`` is the
    predicted class (``argmax_k out[k] == category``).
    """

    def __init__(self, category: int, mask: Tensor | Sequence | None = None) -> None:
        if isinstance(category, bool) or not isinstance(category, numbers.Integral) or category < 0:
            raise TypeError(f"MaskTarget: category must be a non-negative int, got {category!r}")
        self.category = int(category)
        self.mask = None if mask is None else torch.as_tensor(mask)
        if self.mask is not None and self.mask.dim() != 2:
            raise ValueError(f"MaskTarget: mask must be (H, W), got shape {tuple(self.mask.shape)}")

    def __repr__(self) -> str:
        return f"MaskTarget({self.category}, mask={'argmax' if self.mask is None else tuple(self.mask.shape)})"

    def __call__(self, output: Tensor) -> Tensor:
        if output.dim() < 2 or not 0 <= self.category < output.shape[0]:
            raise ValueError(f"MaskTarget: category {self.category} is not a class of an output of shape "
                             f"{tuple(output.shape)} (K, H, W)")
        mask = (output.detach().argmax(0) == self.category) if self.mask is None else self.mask
        if tuple(mask.shape) != tuple(output.shape[1:]):
            raise ValueError(f"MaskTarget: mask {tuple(mask.shape)} does not match the output's {tuple(output.shape[1:])}")
        return (output[self.category] * mask.to(output.device, output.dtype)).sum()


class ScorePlan(NamedTuple):
    """What to differentiate: one ``(B,)`` tensor of per-image scores per backward round.

    Attributes:
        scores: per round, each image's score (0 for an image without a target in it).
        sets: several targets per image (the rounds' layout, :meth:`ClassSets.assemble`);
            None: one target per image, one round.
        targets: what the result reports: class indices (``(B,)``, ``(B, K)`` or one
            ``(K_b,)`` per image), a detector's labels per image, or None for callables.
    """

    scores: list[Tensor]
    sets: ClassSets | None
    targets: Tensor | list[Tensor] | None


def _callables(target: object) -> bool:
    return callable(target) or (isinstance(target, (list, tuple)) and bool(target) and all(callable(t) for t in target))


def _callable_rounds(target: object) -> bool:
    return (isinstance(target, (list, tuple)) and bool(target) and all(isinstance(t, (list, tuple)) for t in target)
            and any(t for t in target) and all(callable(c) for t in target for c in t))


def _per_image(output: object, b: int) -> object:
    return output[b]


def _batch_of(output: object) -> int:
    return int(output.shape[0]) if isinstance(output, Tensor) else len(output)


def _call_scores(output: object, targets: Sequence[Callable | None]) -> Tensor:
    """``(B,)``: ``targets[b](output_b)`` (0 where ``targets[b]`` is None)."""
    vals = []
    ref = None
    for b, t in enumerate(targets):
        if t is None:
            vals.append(None)
            continue
        v = torch.as_tensor(t(_per_image(output, b))).sum()
        ref = v if ref is None else ref
        vals.append(v)
    if ref is None:
        return torch.zeros(len(targets))
    return torch.stack([v.to(ref.device, ref.dtype) if v is not None else ref.new_zeros(()) for v in vals])


def _class_scores(output: Tensor, classes: Tensor) -> Tensor:
    """``(B,)``: class ``classes[b]``'s score of image ``b`` (0 where ``classes[b] < 0``): the
    logit for ``(B, K)`` outputs, the region sum (:class:`MaskTarget` with the argmax mask)
    for dense ``(B, K, ...)`` outputs."""
    c = classes.clamp_min(0)
    if output.dim() == 2:
        picked = output.gather(1, c[:, None])[:, 0]
    else:
        flat = output.flatten(2)  # (B, K, P)
        region = flat.detach().argmax(1) == c[:, None]
        picked = (flat.gather(1, c[:, None, None].expand(-1, 1, flat.shape[2]))[:, 0] * region).sum(1)
    return torch.where(classes >= 0, picked, torch.zeros_like(picked))


def _check_finite(scores: Tensor, what: Callable[[int], str], round_: int | None) -> None:
    bad = ~torch.isfinite(scores.detach())
    if bool(bad.any()):
        b = int(bad.nonzero()[0, 0])
        where = f" (round {round_} of several targets per image)" if round_ is not None else ""
        raise ValueError(f"the model's output is not finite ({float(scores[b].detach())}) for image {b} of the batch, "
                         f"{what(b)}{where}: a map of it would be NaN; check the model and the input")


def score_plan(output: Tensor | list, target: object, class_names: Sequence[str] | None = None) -> ScorePlan:
    """The rounds of per-image scores for ``target`` on a model ``output`` (module docstring):
    ``(B, K)`` class scores, dense ``(B, K, ...)`` scores or a detector's list of dicts."""
    B = _batch_of(output)
    dense = isinstance(output, Tensor) and output.dim() > 2
    if is_detections(output) and target is None:
        per_image = every_detection(output)
        sets = _rounds_of(per_image, B)
        scores = [_call_scores(output, [t[j] if j < len(t) else None for t in per_image])
                  for j in range(sets.rounds.shape[0])]
        for j, s in enumerate(scores):
            _check_finite(s, lambda b, j=j: f"detection {j} (label {int(sets.rounds[j, b])})", j)
        return ScorePlan(scores, sets, sets.indices())
    if _callable_rounds(target):
        if len(target) != B:
            raise ValueError(f"target: {len(target)} lists of callables for a batch of {B} images; give one per image")
        sets = _rounds_of(target, B)
        scores = [_call_scores(output, [t[j] if j < len(t) else None for t in target]) for j in range(sets.rounds.shape[0])]
        for j, s in enumerate(scores):
            _check_finite(s, lambda b, j=j: f"its target {target[b][j]!r}", j)
        return ScorePlan(scores, sets, None)
    if _callables(target):
        per = [target] * B if callable(target) else list(target)
        if len(per) != B:
            raise ValueError(f"target: {len(per)} callables for a batch of {B}")
        s = _call_scores(output, per)
        _check_finite(s, lambda b: f"target {per[b]!r}", None)
        return ScorePlan([s], None, None)
    if not isinstance(output, Tensor):
        raise TypeError(f"target: the model returned {type(output).__name__}; give callables taking one image's "
                        "output (camfast.methods.detection.BoxScoreTarget for detections)")
    if dense and target is None:
        raise ValueError(f"target: the model's output has shape {tuple(output.shape)} (dense scores, a segmentation "
                         "model?); give the class whose region to explain (target=k) or "
                         "camfast.methods.targets.MaskTarget(k, mask)")
    scores2d = output if not dense else output.detach().flatten(2).amax(2)  # (B, K): for parsing only
    if is_multi_target(target):
        sets = class_sets(scores2d, target, class_names)
        scores = [_class_scores(output, sets.rounds[j]) for j in range(sets.rounds.shape[0])]
        for j, s in enumerate(scores):
            _check_finite(s, lambda b, j=j: f"class {int(sets.rounds[j, b])}", j)
        return ScorePlan(scores, sets, sets.indices())
    _, idx = target_score(scores2d.detach(), target, class_names)
    assert idx is not None
    s = _class_scores(output, idx)
    _check_finite(s, lambda b: f"class {int(idx[b])}", None)
    return ScorePlan([s], None, idx)


def _rounds_of(per_image: Sequence[Sequence[object]], B: int) -> ClassSets:
    """Rounds for per-image lists of targets: ``rounds[j, b]`` the label of a detection's
    target (``-1`` for other callables, and past image ``b``'s last)."""
    counts = [len(t) for t in per_image]
    R = max(counts, default=0)
    rounds = torch.full((R, B), -1, dtype=torch.long)
    for b, t in enumerate(per_image):
        for j, item in enumerate(t):
            labels = getattr(item, "labels", None)
            rounds[j, b] = int(labels[0]) if isinstance(labels, Tensor) and labels.numel() == 1 else -1
    return ClassSets(rounds, counts, True)
