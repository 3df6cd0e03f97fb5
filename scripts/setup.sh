#!/usr/bin/env bash
# Shared by scripts/test.sh and scripts/explain.sh (sourced, not run): on a fresh machine
# with Python 3.10+ and pip, create a local virtual environment (.venv), install CPU torch
# without pulling a CUDA build (the pins in constraints.txt) and everything in
# requirements-dev.txt, and build camfast with its compiled extension (editable install).
# Set CAMFAST_SKIP_SETUP=1 to reuse an existing .venv as it is.
# The caller's working directory is left alone (relative paths it was given stay valid).
set -euo pipefail
CAMFAST_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

python=${PYTHON:-python3}
if [ ! -x "$CAMFAST_ROOT/.venv/bin/python" ]; then
  "$python" -m venv "$CAMFAST_ROOT/.venv"
fi
# shellcheck disable=SC1091
. "$CAMFAST_ROOT/.venv/bin/activate"

if [ "${CAMFAST_SKIP_SETUP:-0}" != 1 ]; then
  echo "== installing dependencies (constraints.txt pins torch)" >&2
  python -m pip install --quiet --disable-pip-version-check -c "$CAMFAST_ROOT/constraints.txt" -r "$CAMFAST_ROOT/requirements-dev.txt"
  # CAMFAST_REBUILD=auto (scripts/explain.sh) skips the build when the installed camfast._C
  # was built from this checkout's csrc/; the tests (CAMFAST_REBUILD unset) always rebuild.
  if [ "${CAMFAST_REBUILD:-1}" = auto ] && CAMFAST_ROOT="$CAMFAST_ROOT" python - 2>/dev/null <<'PY'
import os, sys
os.environ["CAMFAST_REQUIRE_NATIVE"] = "1"
from camfast import _ext
sys.exit(_ext.native.source_hash() != _ext.source_hash(os.path.join(os.environ["CAMFAST_ROOT"], "csrc")))
PY
  then
    echo "== camfast is built from this checkout" >&2
  else
    echo "== building camfast (scikit-build-core, CMake; CUDA kernels too if nvcc is found)" >&2
    python -m pip install --quiet --disable-pip-version-check -c "$CAMFAST_ROOT/constraints.txt" --no-build-isolation --no-deps -e "$CAMFAST_ROOT"
  fi
fi
