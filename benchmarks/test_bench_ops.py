"""pytest-benchmark timings of every op with a case module in ``cases/`` (one per op).

``conftest.py`` parametrizes the tests over the ops (``bench_op``) and, for
``test_provider``, over each op's cases and providers.

    pytest benchmarks/test_bench_ops.py --benchmark-only
    pytest benchmarks/test_bench_ops.py --benchmark-only -k box_filter    # one op
    CAMFAST_BENCH_QUICK=1 pytest benchmarks --benchmark-disable -q        # smoke test, seconds
"""


def test_provider(benchmark, bench, bench_case, bench_provider):
    """Every case of the op on every provider: checked against the reference, then timed."""
    bench.time_provider(benchmark, bench_case, bench_provider)


def test_copy_bandwidth(benchmark, bench):
    """The copy the op's GB/s is compared with (bytes = read + write)."""
    bench.time_copy(benchmark)
