"""Pure-PyTorch reference implementations: the readable specification of every op.

Tests compare the native and Triton kernels against these functions, and the benchmarks
time them as the baseline. They accumulate in float32 (float64 for float64 inputs).
"""
