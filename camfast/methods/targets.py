"""What a CAM method's ``target`` may be, parsed in one place for every method.

* None: each image's top class; an int (Python or numpy) or a 0-d tensor: that class for
  every image; one class per image (a sequence or 1-D integer tensor/array); class names
  (case-insensitive) when the model carries them (:func:`class_names_of`);
* callables taking one image's output and returning a scalar (pytorch-grad-cam's targets);
* several classes per image (:func:`is_multi_target`): a ``(B, K)`` integer tensor, or one
  sequence of classes per image (lengths may differ, even 0), parsed into :class:`ClassSets`
  (rounds of one class per image, so a gradient method runs one backward per round).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

__all__ = ["ClassSets", "Target", "class_names_of", "class_sets", "each_class", "is_multi_target",
           "target_indices", "target_score"]

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
