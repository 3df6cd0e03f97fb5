"""Launchers for the compiled kernels in ``camfast._C`` (C++/OpenMP on CPU, CUDA on GPU)."""
