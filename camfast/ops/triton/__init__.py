"""Triton kernels. Imported lazily: ``import camfast`` never imports triton.

On a GPU they compile for the device; on CPU tensors they run only under
``TRITON_INTERPRET=1`` (slow, for tests), which must be set before triton itself is first
imported (triton binds its own library helpers to the mode in force then).
"""
