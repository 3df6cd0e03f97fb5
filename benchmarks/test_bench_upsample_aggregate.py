"""pytest-benchmark timings of ``camfast::upsample_aggregate`` (cases in ``cases/upsample_aggregate.py``).

    pytest benchmarks/test_bench_upsample_aggregate.py --benchmark-only
    CAMFAST_BENCH_QUICK=1 pytest benchmarks --benchmark-disable -q     # smoke test, seconds
"""

BENCH_OP = "upsample_aggregate"


def test_provider(benchmark, bench, bench_case, bench_provider):
    """Every (mode, direction) case on every provider: checked, then timed."""
    bench.time_provider(benchmark, bench_case, bench_provider)


def test_copy_bandwidth(benchmark, bench):
    """The copy the op's GB/s is compared with (bytes = read + write)."""
    bench.time_copy(benchmark)
