"""The op contract: every op in ``op_specs.SPECS`` gets each of these tests (torchvision's
``OpTester``, kornia's ``BaseTester``, over a table).

* reference match: values and gradients of every tensor argument against autograd of the
  pure-PyTorch reference, on every backend (native, triton, reference), every dtype, odd and
  degenerate shapes, with the one tolerance table (``helpers.TOLERANCES``); outputs are
  contiguous. On the reference backend this checks the explicit reference backward;
* layouts: channels-last, strided views, transposed, stride-0 (expanded) and mixed layouts,
  in float32 and half precision; gradients keep a channels-last input's layout where the op
  says so;
* ``torch.autograd.gradcheck`` in float64;
* ``torch.library.opcheck`` of the op (contiguous, channels-last, strided; strided with the
  first input not requiring grad) and of its backward op;
* ``torch.compile(fullgraph=True)`` against eager, values and gradients, for contiguous and
  channels-last inputs (slow);
* random shapes and options (hypothesis) against the reference;
* bad input: a ``ValueError`` / ``TypeError`` whose message starts with the argument's name,
  on every backend, also when ``torch.ops.camfast.<op>`` is called directly.

Op-specific behaviour (hand-computed values, NaN, ties, large and streaming shapes, kornia
parity, the compiled module's raw-argument checks) stays in ``test_<op>.py``.
"""

from __future__ import annotations

import functools
import types

import pytest
import torch
from helpers import assert_close, require_backend
from hypothesis import given, settings
from hypothesis import strategies as st
from ops.op_specs import (
    LAYOUT_VARIANTS,
    SPECS,
    OpSpec,
    check_against_reference,
    map_tensors,
    relayout_args,
    tensors,
    with_tensors,
)

from camfast.ops import use_backend


def _params(ids_of, test: str | None = None, layout_of=lambda *p: None) -> list:
    """pytest params ``(op name, *rest)`` for every spec, ``ids_of(spec)`` giving the rests; a
    ``(test, layout)`` in the spec's ``known_failures`` is a strict xfail."""
    params = []
    for spec in SPECS.values():
        for rest in ids_of(spec):
            rest = rest if isinstance(rest, tuple) else (rest,)
            reason = spec.known_failures.get((test, layout_of(*rest)))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            params.append(pytest.param(spec.name, *rest, id="-".join([spec.name, *map(str, rest)]), marks=marks))
    return params


# ---------------------------------------------------------------- reference match
@pytest.mark.parametrize("name, case", _params(lambda s: s.cases))
def test_matches_reference(name, case, backend, device, dtype):
    spec = SPECS[name]
    check_against_reference(spec, spec.args(spec.cases[case], dtype, device), dtype)


# ---------------------------------------------------------------- layouts
@pytest.mark.parametrize("name, case, layout",
                         _params(lambda s: [(c, lay) for c in s.layout_cases for lay in s.layouts]))
def test_layouts(name, case, layout, backend, device):
    spec = SPECS[name]
    cycle, dtype = LAYOUT_VARIANTS[layout]
    args = relayout_args(spec, spec.args(spec.layout_cases[case], dtype, device), cycle)
    inputs = tensors(spec, args)
    if layout != "contiguous":
        assert not all(t.is_contiguous() for t in inputs), "the layout changed no strides"
    _, grads = check_against_reference(spec, args, dtype)
    if spec.grad_keeps_channels_last:
        for i, (t, g) in enumerate(zip(inputs, grads)):
            if not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
                assert g.is_contiguous(memory_format=torch.channels_last), f"gradient {i} lost channels-last"


# ---------------------------------------------------------------- gradcheck
@pytest.mark.parametrize("name, case", _params(lambda s: s.gradcheck_cases))
def test_gradcheck_float64(name, case, backend, device):
    spec = SPECS[name]
    c = spec.gradcheck_cases[case]
    args = map_tensors(spec, spec.args(c, torch.float64, device), lambda t: t.requires_grad_(True))
    assert torch.autograd.gradcheck(
        lambda *ts: spec.fn(*with_tensors(spec, args, ts)), tensors(spec, args), eps=1e-6, atol=spec.gradcheck_atol,
        fast_mode=spec.gradcheck_fast(backend, device, c),
    )


# ---------------------------------------------------------------- torch.library.opcheck
# id -> (layout, which tensor arguments require grad)
OPCHECK_VARIANTS = {
    "contiguous": ("contiguous", "all"),
    "channels_last": ("channels_last", "all"),
    "strided": ("strided", "all"),
    "strided-first-no-grad": ("strided", "all but the first"),  # one-tensor ops: none
}


def _opcheck_ids(spec: OpSpec) -> list[tuple[str, str]]:
    return [(c, v) for c in spec.opcheck_cases for v, (layout, _) in OPCHECK_VARIANTS.items()
            if layout == "contiguous" or layout in spec.layouts]


@pytest.mark.parametrize("name, case, variant",
                         _params(_opcheck_ids, "opcheck", lambda case, variant: OPCHECK_VARIANTS[variant][0]))
def test_opcheck(name, case, variant, backend, device):
    spec = SPECS[name]
    layout, grad = OPCHECK_VARIANTS[variant]
    args = relayout_args(spec, spec.args(spec.opcheck_cases[case], torch.float32, device), (layout,))
    args = with_tensors(spec, args, [t.detach().requires_grad_(grad == "all" or i > 0)
                                     for i, t in enumerate(tensors(spec, args))])
    torch.library.opcheck(spec.op, args)


@pytest.mark.parametrize("name, case", _params(lambda s: s.opcheck_cases))
def test_opcheck_backward(name, case, backend, device):
    spec = SPECS[name]
    args = spec.args(spec.opcheck_cases[case], torch.float32, device)
    torch.library.opcheck(spec.backward_op, spec.backward_args(args, spec.op(*args)))


# ---------------------------------------------------------------- torch.compile
@functools.cache
def _loss_fns(name: str):
    """Eager and compiled ``loss(tensors of every compile case)``: the op on every compile case
    (its tensors scaled first, so the op takes graph intermediates; its other arguments are
    constants of the graph), one scalar loss. Compiled once per op: the backend is chosen
    inside the op at run time, so one graph serves every backend."""
    spec = SPECS[name]
    templates = []
    for i, c in enumerate(spec.compile_cases.values()):
        args = spec.args(c, torch.float32, "cpu", seed=i)
        templates.append(with_tensors(spec, args, [None] * len(tensors(spec, args))))

    def loss_fn(all_tensors):
        outs = [spec.fn(*with_tensors(spec, args, [t * 2.0 for t in ts])) for args, ts in zip(templates, all_tensors)]
        return sum(o.square().mean() for o in outs), outs

    # dynamo keeps its compiled entries per code object (a few at most): one code object per op
    code = loss_fn.__code__.replace(co_name=f"loss_{name}")
    loss_fn = types.FunctionType(code, loss_fn.__globals__, code.co_name, None, loss_fn.__closure__)
    return loss_fn, torch.compile(loss_fn, fullgraph=True)


@pytest.mark.slow
@pytest.mark.parametrize("name, layout", _params(
    lambda s: [lay for lay in ("contiguous", "channels_last") if lay in s.layouts], "compile", lambda lay: lay))
def test_torch_compile_fullgraph_matches_eager(name, layout, backend, device):
    """The op traces into a full graph (fake kernel) and gives eager's values and gradients."""
    if backend == "triton" and device.type == "cpu":
        pytest.skip("inductor on CPU with the Triton interpreter adds nothing over the native run")
    spec = SPECS[name]
    inputs = [tensors(spec, relayout_args(spec, spec.args(c, torch.float32, device, seed=i), (layout,)))
              for i, c in enumerate(spec.compile_cases.values())]
    results = []
    for fn in _loss_fns(name):
        leaves = [[t.detach().clone().requires_grad_(True) for t in ts] for ts in inputs]
        with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):  # never a silent eager run
            loss, outs = fn(leaves)
        grads = torch.autograd.grad(loss, [t for ts in leaves for t in ts])
        results.append([loss, *outs, *grads])
    for i, (eager, compiled) in enumerate(zip(*results)):
        assert_close(compiled, eager, torch.float32, f"compiled {name} result {i} (loss, outputs, gradients)")


# ---------------------------------------------------------------- random shapes
RANDOM_EXAMPLES = {"native": 40, "triton": 10, "reference": 10}


@pytest.mark.parametrize("name, backend_name", _params(lambda s: list(RANDOM_EXAMPLES)))
def test_random_shapes(name, backend_name):
    spec = SPECS[name]
    device = torch.device("cuda" if backend_name == "triton" and torch.cuda.is_available() else "cpu")
    require_backend(backend_name, device)
    small = backend_name == "triton" and device.type == "cpu"  # the interpreter is slow
    layouts = [lay for lay in ("contiguous", "channels_last", "strided", "transposed") if lay in spec.layouts]

    @settings(max_examples=RANDOM_EXAMPLES[backend_name], deadline=None)
    @given(case=spec.random_case(small), dtype=st.sampled_from(spec.random_dtypes[backend_name]),
           layout=st.sampled_from(layouts), seed=st.integers(0, 2**16))
    def check(case, dtype, layout, seed):
        args = relayout_args(spec, spec.args(case, dtype, device, seed), (layout,))
        with use_backend(backend_name):
            check_against_reference(spec, args, dtype, seed)

    check()


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("name, bad", _params(lambda s: [b.id for b in s.bad_inputs]))
def test_bad_input(name, bad, backend):
    b = next(b for b in SPECS[name].bad_inputs if b.id == bad)
    with pytest.raises(b.exc, match=b.match) as err:
        SPECS[name].fn(*b.make())
    assert str(err.value).startswith(b.arg), f"the message does not start with {b.arg!r}: {err.value}"


@pytest.mark.parametrize("name, bad", _params(lambda s: [b.id for b in s.bad_inputs if b.direct]))
def test_bad_input_direct_op_call(name, bad, backend):
    """torch.ops.camfast.<op> bypasses the Python wrapper; the op still checks before a kernel reads."""
    b = next(b for b in SPECS[name].bad_inputs if b.id == bad)
    with pytest.raises(b.exc, match=b.match) as err:
        SPECS[name].op(*b.make())
    assert str(err.value).startswith(b.arg), f"the message does not start with {b.arg!r}: {err.value}"
