"""pytest-benchmark driver for the cases in ``benchmarks/cases/`` (independent of ``tests/``).

Benchmark tests take the ``bench`` fixture (the op's cases and configuration) plus, for
per-provider tests, ``bench_case`` and ``bench_provider``. :func:`pytest_generate_tests`
parametrizes them over every op with a case module (``bench_op``; ``test_bench_ops.py``) and
over each op's cases and providers (providers that cannot run here are collected as skipped,
with the reason). Every test checks correctness against the float64 reference before it
times anything.

Configuration comes from the environment (see ``harness.env_config``):
``CAMFAST_BENCH_SHAPE=32,256,56,56``, ``CAMFAST_BENCH_DTYPE=float32``,
``CAMFAST_BENCH_DEVICE=cpu``, ``CAMFAST_BENCH_QUICK=1`` (small shape, for a smoke run with
``--benchmark-disable``).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cases as case_modules  # noqa: E402
import harness  # noqa: E402


class Bench:
    """The cases, configuration and cached inputs of one op inside pytest."""

    def __init__(self, op: str) -> None:
        self.module = case_modules.load(op)
        self.config = harness.env_config(self.module)
        self.cases = self.module.make_cases()

    @functools.lru_cache(maxsize=1)  # tests run case by case: keep one case's tensors alive
    def prepared(self, case: harness.Case) -> tuple[harness.Inputs, list[Any]]:
        inputs = case.setup(self.config.shape, self.config.dtype, self.config.device)
        return inputs, harness.expected_output(case, inputs)

    def _timed(self, benchmark: Any, fn: Any, args: harness.Inputs, bytes_moved: int) -> None:
        device = self.config.device

        def call() -> None:
            fn(*args)
            harness.synchronize(device)

        benchmark.extra_info.update(bytes=bytes_moved, shape=list(self.config.shape), dtype=self.config.dtype_name)
        benchmark(call)
        stats = getattr(benchmark, "stats", None)
        if stats is not None:  # None under --benchmark-disable
            benchmark.extra_info["gbps"] = round(bytes_moved / stats.stats.median / 1e9, 2)

    def time_provider(self, benchmark: Any, case: harness.Case, provider: str) -> None:
        """Check ``provider`` on ``case`` (fail the test if wrong), then time it."""
        inputs, expected = self.prepared(case)
        fn = case.providers[provider]
        check = harness.check_provider(case, fn, inputs, expected)
        benchmark.extra_info.update(max_abs=check.max_abs, max_rel=check.max_rel)
        if not check.ok:
            pytest.fail(f"{case.op} {case.name} {provider}: {check.status} {check.message} "
                        f"(max abs {check.max_abs}, max rel {check.max_rel})")
        self._timed(benchmark, fn, inputs, case.bytes_moved(inputs))

    def time_copy(self, benchmark: Any) -> None:
        """``dst.copy_(src)`` on the op's biggest input size: the bandwidth the op is held to."""
        dst, src = harness.copy_buffers(harness.max_input_bytes(self.cases, self.config), self.config.device)
        self._timed(benchmark, dst.copy_, (src,), 2 * harness.nbytes(src))


@functools.cache
def _bench(op: str) -> Bench:
    return Bench(op)


@pytest.fixture
def bench(bench_op: str) -> Bench:
    return _bench(bench_op)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "bench_op" not in metafunc.fixturenames:
        return
    if not {"bench_case", "bench_provider"} <= set(metafunc.fixturenames):
        metafunc.parametrize("bench_op", case_modules.available())
        return
    params = []
    for op in case_modules.available():
        b = _bench(op)
        for case in b.cases:
            _, skipped = harness.runnable_providers(case, b.config.device)
            for provider in case.providers:
                marks = [pytest.mark.skip(reason=skipped[provider])] if provider in skipped else []
                params.append(pytest.param(op, case, provider, id=f"{op}-{case.name}-{provider}", marks=marks))
    metafunc.parametrize(("bench_op", "bench_case", "bench_provider"), params)


def pytest_report_header(config: pytest.Config) -> str:
    info = harness.stamp(harness.default_device())
    return (f"camfast benchmarks: {harness.machine_text(info['machine'])}; {harness.commit_text(info['git'])}; "
            f"{harness.build_text(info['native'])}")
