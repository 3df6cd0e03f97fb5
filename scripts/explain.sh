#!/usr/bin/env bash
# The README's main job: on a fresh machine with Python 3.10+ and pip, set up .venv
# (scripts/setup.sh; the first run takes a few minutes, later runs reuse it unless
# requirements changed: pip skips what is installed) and run `camfast explain` on the
# bundled sample photos with the bundled pretrained EfficientNet-Lite0.
# Extra arguments go to `camfast explain`, e.g.  scripts/explain.sh --method all --out out/
set -euo pipefail
export CAMFAST_REBUILD=${CAMFAST_REBUILD:-auto}
# shellcheck source=setup.sh
. "$(dirname "$0")/setup.sh"
exec camfast explain "$@"
