#!/usr/bin/env bash
# Run the Airflow version matrix: each older minor's newest patch in its own cached environment
# (scripts/airflow_envs.sh), then write docs/support-matrix.md from every version's results.
#
#   ./scripts/airflow_matrix.sh            # older minors + 3.3 (the same set of tests)
#   ./scripts/airflow_matrix.sh --older    # older minors only (scripts/test.sh: 3.3 ran in full already)
#   ./scripts/airflow_matrix.sh --help     # this text
#
# Every minor runs the parity suite, the version checks and the end-to-end test; all but the
# oldest (3.1, to keep CI's time down) also run the engine on SQLite. A known minor the sidecar
# refused (a contract with `not_yet`: none today) would run the version checks only, which
# prove the refusal and its contract against its schema.
#
# Results (JUnit XML, one file per version) go to ${SIDECAR_MATRIX_DIR:-build/matrix}; a newest
# results file left there by scripts/test.sh's full run is used for the 3.3 column. Exit code:
# non-zero when any version's tests failed (the matrix page is written either way).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${SIDECAR_MATRIX_DIR:-$ROOT/build/matrix}"
mkdir -p "$OUT"

# What every version runs: Airflow as the oracle, the version detection, the real scheduler.
MATRIX_TESTS=(
    tests/parity
    tests/integration/test_airflow_versions.py
    tests/integration/test_engine_sqlite.py
    tests/e2e/test_sidecar_backfill.py
)
# The oldest minor: Airflow as the oracle, the version checks and the real scheduler only.
OLDEST_TESTS=(
    tests/parity
    tests/integration/test_airflow_versions.py
    tests/e2e/test_sidecar_backfill.py
)
OLDEST_VERSIONS=" 3.1.8 "
# Known minors the sidecar refuses at start-up (their contract's `not_yet`; none today).
REFUSED_TESTS=(tests/integration/test_airflow_versions.py)
REFUSED_VERSIONS=" "
NEWEST_VERSION=3.3.2
NEWEST_PYTHON="${SIDECAR_NEWEST_PYTHON:-$ROOT/.venv/bin/python}"

older_only=0
case "${1:-}" in
    --older) older_only=1 ;;
    -h | --help)  # the header above, without its shebang: never the whole matrix by mistake
        sed -n '2,/^set -uo/{/^#/s/^# \{0,1\}//p}' "$0"
        exit 0
        ;;
    "") ;;
    *) echo "usage: $0 [--older | --help]" >&2; exit 2 ;;
esac

# Per-version pytest arguments: 3.1's newest standard provider imports names 3.1 deprecates
# (DeprecatedImportWarning from the provider's compat layer, not from the sidecar or the tests).
extra_args() {
    case "$1" in
        3.1.*) echo "-W ignore::airflow.utils.deprecation_tools.DeprecatedImportWarning" ;;
    esac
}

run_version() {
    local version="$1" python="$2" start=$SECONDS rc
    local -a tests=("${MATRIX_TESTS[@]}")
    [[ "$OLDEST_VERSIONS" == *" $version "* ]] && tests=("${OLDEST_TESTS[@]}")
    [[ "$REFUSED_VERSIONS" == *" $version "* ]] && tests=("${REFUSED_TESTS[@]}")
    echo "==> Airflow $version: ${tests[*]}"
    # From the checkout, with it on PYTHONPATH: the cached venvs hold the dependencies, not the
    # project (scripts/airflow_envs.sh), so the sidecar under test is always this checkout's.
    # shellcheck disable=SC2046
    CI=true SIDECAR_TEST_AIRFLOW="$version" PYTHONPATH="$ROOT" PATH="$(dirname "$python"):$PATH" \
        "$python" -m pytest -q -p no:cacheprovider $(extra_args "$version") \
        --junitxml="$OUT/$version.xml" "${tests[@]}"
    rc=$?
    echo "==> Airflow $version: exit $rc in $((SECONDS - start)) s"
    return "$rc"
}

status=0
envs_start=$SECONDS
mapfile -t envs < <("$ROOT/scripts/airflow_envs.sh") || status=1
echo "==> environments ready in $((SECONDS - envs_start)) s"
for line in "${envs[@]}"; do
    run_version "${line%% *}" "${line#* }/bin/python" || status=1
done
if [[ $older_only == 0 ]]; then
    run_version "$NEWEST_VERSION" "$NEWEST_PYTHON" || status=1
fi

results=()
for file in "$OUT"/*.xml; do
    [[ -f "$file" ]] && results+=("$file")
done
"$NEWEST_PYTHON" scripts/support_matrix.py docs/support-matrix.md "${results[@]}" || status=1
exit "$status"
