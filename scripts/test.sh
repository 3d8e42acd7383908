#!/usr/bin/env bash
# Set everything up and run the whole test suite: lint and types (scripts/lint.sh), the Python tests (real
# servers on loopback, the real tritonclient and tritonserver), then the Yocto layer checks
# (scripts/check-layer.sh). Every part runs; the exit status is non-zero when any of them failed.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
status=0
scripts/lint.sh || status=1
.venv/bin/python -m pytest "$@" || status=$?
if [ -x scripts/check-layer.sh ]; then
    layer=0
    scripts/check-layer.sh || layer=$?
    if [ "$layer" -eq 77 ]; then
        echo "test: LAYER CHECKS SKIPPED (no layer mirrors and no network): the layer is NOT verified" >&2
    elif [ "$layer" -ne 0 ]; then
        status=$layer
    fi
fi
exit "$status"
