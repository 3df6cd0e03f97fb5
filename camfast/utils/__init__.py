"""Utilities shared by camfast's commands and benchmarks: one of each.

- :mod:`camfast.utils.io`: the atomic writer (data or a writer callback);
- :mod:`camfast.utils.image`: the image reader (EXIF and colour-mode policy), the suffix
  list and folder discovery;
- :mod:`camfast.utils.progress`: the progress reporter;
- :mod:`camfast.utils.lock`: the output-folder lock.
"""
