#!/usr/bin/env bash
# The project's test command (README, CI): set up the venv, then every check in order.
#
#   ./scripts/test.sh [PYTEST ARGS...]
#
# Order: generated code is current -> proto lint -> ruff -> import contracts -> mypy -> pytest (the
# newest Airflow, in full) -> the older Airflow minors' parity and end-to-end tests, each in its
# cached environment (scripts/airflow_matrix.sh --older; SIDECAR_SKIP_MATRIX=1 skips it), which
# also writes docs/support-matrix.md. CI=true is
# exported so tests that need PostgreSQL or Airflow fail instead of skipping when the
# infrastructure is missing. SIDECAR_SKIP_INSTALL=1 skips the pip step (offline reruns).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# shellcheck source=scripts/_python.sh
source "$ROOT/scripts/_python.sh"

step() { printf '\n==> %s\n' "$*"; }

if [[ ! -x .venv/bin/python ]]; then
    PYTHON="$(find_python)" || { echo "error: python >= 3.11 is required" >&2; exit 1; }
    step "creating .venv with $PYTHON"
    "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
source .venv/bin/activate

if [[ "${SIDECAR_SKIP_INSTALL:-0}" != "1" ]]; then
    step "pip install -e '.[shim,dev]'"
    python -m pip install --quiet --disable-pip-version-check -e '.[shim,dev]'
fi

export CI=true

if [[ -f scripts/gen_protos.py ]]; then
    step "generated code is up to date"
    python scripts/gen_protos.py --check
fi

if [[ -f buf.yaml ]]; then
    step "buf lint"
    buf lint
fi

step "ruff"
ruff check .
ruff format --check .

step "import contracts (lint-imports: the layers in pyproject's [tool.importlinter])"
lint-imports --no-logo --no-cache

step "deployment files (hadolint, yamllint, values schema)"
hadolint deploy/Dockerfile deploy/Dockerfile.airflow
yamllint -c deploy/helm/.yamllint.yaml deploy/helm
check-jsonschema --schemafile deploy/helm/values.schema.json deploy/helm/values-airflow-sidecar.yaml

step "mypy"
mypy

step "pytest (Airflow $(python -c 'import importlib.metadata as m; print(m.version("apache-airflow"))'))"
mkdir -p build/matrix
python -m pytest -q --junitxml=build/matrix/3.3.2.xml "$@"

if [[ "${SIDECAR_SKIP_MATRIX:-0}" != "1" && $# -eq 0 ]]; then
    step "older Airflow minors (scripts/airflow_matrix.sh --older)"
    ./scripts/airflow_matrix.sh --older
fi
