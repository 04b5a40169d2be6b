#!/usr/bin/env bash
# CI: the Python package type-checks under `mypy --strict` (configuration: [tool.mypy] in pyproject.toml),
# and so does what a caller writes against its API (tests/typing/).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
$PY -m mypy --version >/dev/null 2>&1 || $PY -m pip install -q "mypy>=1.10"
$PY -m mypy --strict parrot/
$PY -m mypy --strict --follow-imports=silent tests/typing/
