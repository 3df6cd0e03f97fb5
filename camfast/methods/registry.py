"""The one registry of CAM methods: a canonical name per method and everything front ends need.

Every method file in :mod:`camfast.methods` registers its public function here with
:func:`register` (and any fixed-option variant with :func:`register_variant`). The
``camfast`` command's ``--method`` choices, ``camfast explain``, ``camfast pseudo-label``,
the WSOL table, the benchmarks and :mod:`camfast.compat` all read this table, so a method
registered here appears in all of them.

Names: each method has one canonical, lower-case, hyphenated name (``"zoom-cam"``).
:func:`get` also accepts any spelling that differs only in case and punctuation
(``"zoom_cam"``, ``"ZoomCAM"``, ``"Zoom-CAM"``; the display names), and the function itself.

Calling convention of a registered function (what front ends rely on)::

    function(model, x, target=None, *, return_layers=False, output_size=None, **options)

returning ``(B, H, W)`` float32 maps in [0, 1], or with ``return_layers=True`` a result with
at least ``.cam`` and ``.targets`` (:class:`camfast.methods.engine.CAMResult`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from camfast.methods.engine import WeightingRule

__all__ = ["KINDS", "MethodSpec", "canonical", "get", "names", "register", "register_variant", "specs", "unregister"]

#: What a method needs from the model: gradients (one backward), the classifier weights
#: (a "global pooling then linear" head, no backward), or forward passes only.
KINDS = ("gradient", "classifier-weight", "forward-only")


@dataclass(frozen=True)
class MethodSpec:
    """One registry row.

    Attributes:
        name: canonical name (``"zoom-cam"``); the CLI's ``--method`` value.
        function: the public function (calling convention in the module docstring).
        display: the name as written in papers and tables (``"Zoom-CAM"``).
        kind: one of :data:`KINDS`.
        summary: one line for ``--help`` and tables.
        options: fixed keyword arguments of this row (a variant such as ``cam-nwc`` is
            ``cam`` with ``clamp_negative_weights=True``); call-time keywords override them.
        rule: the per-layer :class:`~camfast.methods.engine.WeightingRule` of a gradient method.
        multi_layer: whether the method fuses several layers by default (else one layer).
        compat: the :mod:`camfast.compat` class name (pytorch-grad-cam's), or None.
        needs: importable modules the method needs beyond torch (``("pydensecrf",)``).
        takes_image: the function accepts ``image=`` (uint8 RGB ``(B, H, W, 3)``), used for
            colour terms (a CRF); front ends pass the original pixels then.
        base: for a variant, the name of the row it fixes options of.
        raw_map: ``return_layers=True`` gives the method's one map before normalisation (CAM's
            ``W F``), which multi-scale recipes sum as IRN does; else they sum the result.
    """

    name: str
    function: Callable[..., Any]
    display: str
    kind: str
    summary: str
    options: Mapping[str, Any] = field(default_factory=dict)
    rule: WeightingRule | None = None
    multi_layer: bool = False
    compat: str | None = None
    needs: tuple[str, ...] = ()
    takes_image: bool = False
    base: str | None = None
    raw_map: bool = False

    def __call__(self, model, x, target=None, **kwargs):
        """``function(model, x, target, **options, **kwargs)``; ``image=`` is dropped for a
        method that does not take one, so front ends can pass it to every method."""
        if not self.takes_image:
            kwargs.pop("image", None)
        return self.function(model, x, target, **{**self.options, **kwargs})

    def accepts(self, option: str) -> bool:
        """Whether the function takes keyword ``option``."""
        return option in inspect.signature(self.function).parameters

    def missing(self) -> list[str]:
        """The modules in :attr:`needs` that cannot be imported here."""
        import importlib.util

        return [m for m in self.needs if importlib.util.find_spec(m) is None]


_REGISTRY: dict[str, MethodSpec] = {}
_ALIASES: dict[str, str] = {}  # canonical display name -> canonical name


def canonical(name: str) -> str:
    """The lookup key of a spelling: its letters and digits, lower case, with ``+`` read as
    ``plus`` (``"Grad-CAM++"``, ``"gradcam++"`` and ``"grad-cam-plus-plus"`` are one method)."""
    return "".join(ch if ch.isalnum() else "plus" for ch in name.lower() if ch.isalnum() or ch == "+")


def register(name: str, *, display: str, kind: str, summary: str, rule: WeightingRule | None = None,
             multi_layer: bool = False, compat: str | None = None, needs: tuple[str, ...] = (),
             takes_image: bool = False, options: Mapping[str, Any] | None = None, raw_map: bool = False,
             ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering a method's public function under ``name``.

    Example:
        >>> @register("x-grad-cam", display="XGrad-CAM", kind="gradient", summary="...",
        ...           rule=WeightingRule(xgrad_rule), compat="XGradCAM")
        ... def x_grad_cam(model, x, target=None, layer=None, ...): ...
    """

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        _add(MethodSpec(name, function, display, kind, summary, options=MappingProxyType(dict(options or {})),
                        rule=rule, multi_layer=multi_layer, compat=compat, needs=needs, takes_image=takes_image,
                        raw_map=raw_map))
        return function

    return decorate


def register_variant(name: str, base: str, *, display: str, summary: str, needs: tuple[str, ...] = (),
                     **options: Any) -> MethodSpec:
    """Register ``name`` as method ``base`` with fixed keyword ``options`` (over the base's own)
    and extra ``needs``."""
    parent = get(base)
    bad = [k for k in options if not parent.accepts(k)]
    if bad:
        raise TypeError(f"register_variant({name!r}): {parent.name} takes no option(s) {bad}")
    spec = MethodSpec(name, parent.function, display, parent.kind, summary,
                      options=MappingProxyType({**parent.options, **options}), rule=parent.rule,
                      multi_layer=parent.multi_layer, compat=None, needs=tuple(dict.fromkeys(parent.needs + needs)),
                      takes_image=parent.takes_image, base=parent.name, raw_map=parent.raw_map)
    _add(spec)
    return spec


def _add(spec: MethodSpec) -> None:
    if spec.kind not in KINDS:
        raise ValueError(f"method {spec.name!r}: kind must be one of {KINDS}, got {spec.kind!r}")
    if spec.name != spec.name.lower() or " " in spec.name or "_" in spec.name:
        raise ValueError(f"method name {spec.name!r} must be lower case and hyphenated")
    if spec.kind == "gradient" and spec.rule is None:
        raise ValueError(f"gradient method {spec.name!r} needs a weighting rule")
    key = canonical(spec.name)
    old = _REGISTRY.get(key)
    if old is not None and old.function is not spec.function:
        raise ValueError(f"a method named {spec.name!r} is registered already ({old.function.__module__})")
    _REGISTRY[key] = spec
    alias = canonical(spec.display)
    if alias != key and alias not in _REGISTRY:
        _ALIASES.setdefault(alias, key)


def unregister(name: str) -> MethodSpec:
    """Remove a row (and any variant of it) and return it; for tests and user plugins."""
    spec = get(name)
    for key, other in list(_REGISTRY.items()):
        if other is spec or other.base == spec.name:
            del _REGISTRY[key]
    for alias, key in list(_ALIASES.items()):
        if key not in _REGISTRY:
            del _ALIASES[alias]
    return spec


def _load() -> None:
    # Importing the package registers every method file in it.
    import camfast.methods  # noqa: F401


def get(name: str | Callable[..., Any]) -> MethodSpec:
    """The row of a method, by any spelling of its name (or by its function).

    Raises:
        ValueError: unknown name, listing the registered ones.
    """
    _load()
    if callable(name) and not isinstance(name, str):
        for spec in _REGISTRY.values():
            if spec.function is name and spec.base is None:
                return spec
        raise ValueError(f"{getattr(name, '__name__', name)!r} is not a registered camfast method")
    if not isinstance(name, str):
        raise TypeError(f"method must be a name (str), got {type(name).__name__}")
    key = canonical(name)
    spec = _REGISTRY.get(key) or _REGISTRY.get(_ALIASES.get(key, ""))
    if spec is None:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(names())}")
    return spec


def names(kind: str | None = None) -> list[str]:
    """Canonical names, in registration order (optionally of one kind)."""
    return [s.name for s in specs(kind)]


def specs(kind: str | None = None) -> Iterator[MethodSpec]:
    """Every row, in registration order (optionally of one kind)."""
    _load()
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return iter([s for s in _REGISTRY.values() if kind is None or s.kind == kind])
