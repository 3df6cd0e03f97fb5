"""pytest-benchmark timings of ``camfast::guided_filter`` (cases in ``cases/guided_filter.py``).

    pytest benchmarks/test_bench_guided_filter.py --benchmark-only
    CAMFAST_BENCH_QUICK=1 pytest benchmarks --benchmark-disable -q     # smoke test, seconds
"""

BENCH_OP = "guided_filter"


def test_provider(benchmark, bench, bench_case, bench_provider):
    """Every (mode, direction) case on every provider: checked, then timed."""
    bench.time_provider(benchmark, bench_case, bench_provider)


def test_copy_bandwidth(benchmark, bench):
    """The copy the op's GB/s is compared with (bytes = read + write)."""
    bench.time_copy(benchmark)
