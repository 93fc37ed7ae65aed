#!/usr/bin/env bash
# Build (once) and print the cached per-version test environments: one venv per older Airflow
# minor, at its newest patch, with that Airflow, this project's dependencies and the test
# dependencies.
#
#   ./scripts/airflow_envs.sh [VERSION...]     # default: every version in OLDER_AIRFLOWS
#
# Prints "<version> <venv>" per version on stdout (progress and timings on stderr). The venv
# holds the project's dependencies, not the project: whoever uses it runs from a checkout with
# that checkout on PYTHONPATH (scripts/airflow_matrix.sh does), so one cached venv serves every
# checkout and clone. A venv is reused while its stamp matches (Airflow version, the
# dependencies in pyproject.toml's [project] table, the test deps and pins below); otherwise it
# is rebuilt from scratch. Where: ${SIDECAR_VENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/airflow-sidecar/venvs}/airflow-<version>.
# The newest minor (3.3.x) is the project's own .venv and is not built here.
#
# Airflow's constraint files live on GitHub, which this CI cannot reach; instead the few
# libraries that break an older Airflow are pinned in PINS below.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/_python.sh
source "$ROOT/scripts/_python.sh"

# Each older minor's newest patch (scripts/airflow_matrix.sh decides which tests each runs).
OLDER_AIRFLOWS=(3.1.8 3.2.2)
# The test dependencies the parity and end-to-end suites import (pyproject's `dev` minus lint,
# code generation and the 3.3 API client; the git provider: the versioned bundle of
# tests/parity/test_version_pinning.py).
TEST_DEPS=(pytest pytest-asyncio pytest-timeout hypothesis psycopg2-binary cryptography httpx
    "apache-airflow-providers-git>=1.0,<2")
# Per-version pins for libraries whose newer releases break that Airflow: "version=req req ...".
# 3.2.2: FastAPI >= 0.137 rejects its execution API's callable discriminator (the api-server
# does not start), and cadwyn 8+ needs that FastAPI.
PINS=(
    "3.2.2=fastapi[standard-no-fastapi-cloud-cli]<0.137 cadwyn<8"
)

CACHE="${SIDECAR_VENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/airflow-sidecar/venvs}"

pins_for() {
    local version="$1" entry
    for entry in "${PINS[@]+"${PINS[@]}"}"; do
        if [[ "${entry%%=*}" == "$version" ]]; then
            printf '%s\n' ${entry#*=}
        fi
    done
}

# The project's runtime dependencies ([project] dependencies of pyproject.toml), one a line.
project_deps() {
    "$1" -c 'import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))' "$ROOT/pyproject.toml"
}

# Airflow's version, the project's dependencies, the test deps and the pins: not the checkout's
# path, nor the rest of pyproject.toml (tool settings do not change what is installed).
stamp_for() {
    local version="$1" python="$2"
    {
        echo "airflow=$version deps=${TEST_DEPS[*]} pins=$(pins_for "$version" | xargs)"
        project_deps "$python"
    } | sha256sum | cut -d' ' -f1
}

build() {
    local version="$1" venv="$CACHE/airflow-$version" stamp start python
    python="$(find_python)" || { echo "error: python >= 3.11 is required" >&2; return 1; }
    stamp="$(stamp_for "$version" "$python")"
    if [[ -x "$venv/bin/python" && -f "$venv/.stamp" && "$(cat "$venv/.stamp")" == "$stamp" ]]; then
        echo "airflow_envs: $version: cached at $venv" >&2
        echo "$version $venv"
        return 0
    fi
    start=$SECONDS
    echo "airflow_envs: $version: building $venv" >&2
    rm -rf "$venv"
    mkdir -p "$CACHE"
    "$python" -m venv "$venv"
    local -a pins deps
    mapfile -t pins < <(pins_for "$version")
    mapfile -t deps < <(project_deps "$python")
    # The project's dependencies without its `shim` extra (which names the newest minor's range):
    # this Airflow is what the environment is about. Not the project itself: an install (even
    # editable) ties the venv to one checkout's path.
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "apache-airflow==$version" "${deps[@]}" "${TEST_DEPS[@]}" "${pins[@]+"${pins[@]}"}" >&2
    "$venv/bin/python" -m pip check >&2 || {
        echo "error: airflow $version: pip check failed (add a pin to PINS in $0)" >&2
        return 1
    }
    echo "$stamp" >"$venv/.stamp"
    echo "airflow_envs: $version: built in $((SECONDS - start)) s" >&2
    echo "$version $venv"
}

main() {
    local -a versions=("$@")
    if [[ ${#versions[@]} -eq 0 ]]; then
        versions=("${OLDER_AIRFLOWS[@]}")
    fi
    local version
    for version in "${versions[@]}"; do
        build "$version"
    done
}

main "$@"
