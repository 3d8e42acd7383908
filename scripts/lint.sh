#!/usr/bin/env bash
# Lint and type checks, run by scripts/test.sh before the tests (and alone, after scripts/setup.sh test):
#   ruff format --check   the code is formatted
#   ruff check            lint rules of pyproject.toml ([tool.ruff.lint])
#   mypy --strict src     the package, strictly typed
#   mypy tests benchmarks the tests and benchmarks, with the looser [[tool.mypy.overrides]] of pyproject.toml:
#                         undefined names and wrong calls, not missing annotations
# Every check runs; the exit status is non-zero when any of them failed.
set -uo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin
failed=()
run() {
    echo "lint: $*"
    "$@" || failed+=("$*")
}
run "$bin/ruff" format --check --quiet src tests benchmarks
run "$bin/ruff" check --quiet src tests benchmarks
run "$bin/mypy" --strict src
run "$bin/mypy" tests benchmarks
if [ ${#failed[@]} -gt 0 ]; then
    printf 'lint: FAILED: %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "lint: passed"
