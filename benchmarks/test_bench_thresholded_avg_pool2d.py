"""pytest-benchmark timings of ``camfast::thresholded_avg_pool2d`` (cases in ``cases/thresholded_avg_pool2d.py``).

    pytest benchmarks/test_bench_thresholded_avg_pool2d.py --benchmark-only
    CAMFAST_BENCH_QUICK=1 pytest benchmarks --benchmark-disable -q     # smoke test, seconds
"""

BENCH_OP = "thresholded_avg_pool2d"


def test_provider(benchmark, bench, bench_case, bench_provider):
    """Every case (TAP and the GAP comparison) on every provider: checked, then timed."""
    bench.time_provider(benchmark, bench_case, bench_provider)


def test_copy_bandwidth(benchmark, bench):
    """The copy the op's GB/s is compared with (bytes = read + write)."""
    bench.time_copy(benchmark)
