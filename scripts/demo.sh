#!/usr/bin/env bash
# One-command demo on the embedded default (SQLite): a real Airflow 3.3.2 api-server and
# scheduler (with the sidecar shim), the sidecar, and a 5-run backfill created through the
# sidecar's CLI and watched to the end.
#
#   ./scripts/demo.sh
#
# Everything lives in .demo/ (recreated on each run; logs in .demo/logs). Exits 0 only if
# every run of the backfill succeeded. Knobs (environment):
#   DEMO_FROM / DEMO_TO        backfill range (default 2025-03-27 .. 2025-04-01: 5 daily
#                              runs at 06:00 Europe/Amsterdam, across the DST change)
#   DEMO_EXPECTED_RUNS         runs that must succeed (default 5)
#   DEMO_TIMEOUT               seconds to wait for the runs (default 300)
#   DEMO_WITHOUT_SIDECAR=1     baseline: plain `airflow scheduler` + `airflow backfill create`
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DEMO_DIR="$ROOT/.demo"
LOG_DIR="$DEMO_DIR/logs"
DAG_ID=sample_daily
DEMO_FROM="${DEMO_FROM:-2025-03-27}"
DEMO_TO="${DEMO_TO:-2025-04-01}"
DEMO_EXPECTED_RUNS="${DEMO_EXPECTED_RUNS:-5}"
DEMO_TIMEOUT="${DEMO_TIMEOUT:-300}"
WITH_SIDECAR=1
[[ "${DEMO_WITHOUT_SIDECAR:-0}" == "1" ]] && WITH_SIDECAR=0

START_SECONDS=$SECONDS
say() { printf '[demo %4ds] %s\n' "$((SECONDS - START_SECONDS))" "$*"; }

# shellcheck source=scripts/_python.sh
source "$ROOT/scripts/_python.sh"

# --- environment -----------------------------------------------------------------------
if [[ ! -x .venv/bin/python ]]; then
    PYTHON="$(find_python)" || { echo "error: python >= 3.11 is required" >&2; exit 1; }
    say "creating .venv with $PYTHON"
    "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
source .venv/bin/activate
if [[ ! -x .venv/bin/airflow ]] || { ((WITH_SIDECAR)) && [[ ! -x .venv/bin/airflow-sidecar ]]; }; then
    say "pip install -e '.[shim]' (first run only)"
    python -m pip install --quiet --disable-pip-version-check -e '.[shim]'
fi

free_port() { python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }

rm -rf "$DEMO_DIR"
mkdir -p "$LOG_DIR" "$DEMO_DIR/dags"
cp demo/dags/sample_daily.py "$DEMO_DIR/dags/"

# Ports: the sidecar binds port 0 and writes the port the system gave it to a file (nothing can
# take it in between); Airflow's processes get a free port and, should another process take it
# before they bind, are started again on a new one (start_on_free_port below).
SIDECAR_PORT_FILE="$DEMO_DIR/sidecar.port"
DB_PATH="$DEMO_DIR/airflow.db"

# Drop inherited Airflow settings so the demo never touches another Airflow instance.
while IFS= read -r var; do unset "$var"; done < <(env | sed -n 's/^\(AIRFLOW__[A-Za-z0-9_]*\)=.*/\1/p')
export AIRFLOW_HOME="$DEMO_DIR/airflow-home"
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:///$DB_PATH"
export AIRFLOW__CORE__DAGS_FOLDER="$DEMO_DIR/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__EXECUTOR=LocalExecutor
export AIRFLOW__CORE__PARALLELISM=4
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False
export AIRFLOW__API__HOST=127.0.0.1
export AIRFLOW__API__WORKERS=1
export AIRFLOW__API_AUTH__JWT_SECRET="airflow-sidecar-demo-$(python -c 'import secrets; print(secrets.token_hex(32))')"
export AIRFLOW__CORE__AUTH_MANAGER=airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True
export AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC=1
export AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC=1
export AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME=0.5
export AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK=True
export AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST=127.0.0.1
export AIRFLOW__LOGGING__BASE_LOG_FOLDER="$LOG_DIR/tasks"
export AIRFLOW__LOGGING__COLORED_CONSOLE_LOG=False
export SIDECAR_DATABASE_URL="sqlite+aiosqlite:///$DB_PATH"
export SIDECAR_LISTEN="127.0.0.1:0"
export SIDECAR_PORT_FILE

# --- background processes, each in its own process group --------------------------------
PIDS=()
start_bg() {
    local name="$1"
    shift
    setsid "$@" >"$LOG_DIR/$name.log" 2>&1 </dev/null &
    PIDS+=("$!")
    say "started $name (pid $!, log $LOG_DIR/$name.log)"
}

stop_all() {
    local status=$? pid i waited
    trap - EXIT INT TERM
    # Reverse start order: scheduler first, then sidecar, then api-server.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid="${PIDS[$i]}"
        kill -TERM -- "-$pid" 2>/dev/null || true
        for waited in $(seq 1 40); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    echo "logs: $LOG_DIR (task logs under $LOG_DIR/tasks)"
    exit "$status"
}
trap stop_all EXIT
trap 'exit 130' INT TERM

# Poll a probe (a shell command) until it succeeds; fail if the process died meanwhile.
wait_for() {
    local what="$1" pid="$2" timeout="$3"
    shift 3
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "error: $what exited; last log lines:" >&2
            tail -n 30 "$LOG_DIR/$what.log" >&2 || true
            return 1
        fi
        if ((SECONDS >= deadline)); then
            echo "error: $what not ready after ${timeout}s" >&2
            tail -n 30 "$LOG_DIR/$what.log" >&2 || true
            return 1
        fi
        sleep 0.5
    done
    say "$what is ready"
}

# Start a process on free ports, again on new ones (up to 3 times) if another process took a
# port between the choice and the bind: "$1" names it, "$2" is a function that picks and
# exports its ports, "$3" a probe command (reading the exported ports), the rest its command.
start_on_free_port() {
    local name="$1" pick="$2" probe="$3" attempt
    shift 3
    for attempt in 1 2 3; do
        "$pick"
        start_bg "$name" "$@"
        if wait_for "$name" "${PIDS[-1]}" 120 "$probe"; then
            return 0
        fi
        if ! grep -qi "address already in use" "$LOG_DIR/$name.log"; then
            return 1
        fi
        say "$name: a port was taken before it bound; retrying on new ports ($attempt/3)"
        kill -TERM -- "-${PIDS[-1]}" 2>/dev/null || true
        wait "${PIDS[-1]}" 2>/dev/null || true
        unset 'PIDS[-1]'
    done
    return 1
}

api_ports() {
    API_PORT="$(free_port)"
    export AIRFLOW__API__PORT="$API_PORT"
    export AIRFLOW__API__BASE_URL="http://127.0.0.1:$API_PORT"
    export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:$API_PORT/execution/"
}
api_ready() { http_ok "http://127.0.0.1:$API_PORT/api/v2/monitor/health"; }

scheduler_ports() {
    SCHEDULER_HEALTH_PORT="$(free_port)"
    export AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT="$SCHEDULER_HEALTH_PORT"
    export AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT="$(free_port)"
}
scheduler_ready() { http_ok "http://127.0.0.1:$SCHEDULER_HEALTH_PORT/health"; }

# The sidecar is ready once it has written its port and answers health checks there.
sidecar_ready() {
    [[ -s "$SIDECAR_PORT_FILE" ]] || return 1
    SIDECAR_TARGET="127.0.0.1:$(<"$SIDECAR_PORT_FILE")"
    export SIDECAR_TARGET
    grpc_serving "$SIDECAR_TARGET"
}

http_ok() { python -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1"; }

grpc_serving() {
    python - "$1" <<'PY'
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

with grpc.insecure_channel(sys.argv[1]) as channel:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
sys.exit(0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1)
PY
}

# Print the backfill's runs; succeed only if DEMO_EXPECTED_RUNS of them are 'success'.
check_runs() {
    python - "$DB_PATH" "$DAG_ID" "$DEMO_EXPECTED_RUNS" "${1:-quiet}" <<'PY'
import sqlite3
import sys

path, dag_id, expected, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
with sqlite3.connect(path) as db:
    rows = db.execute(
        "SELECT run_id, state FROM dag_run WHERE dag_id = ? AND backfill_id IS NOT NULL ORDER BY logical_date",
        (dag_id,),
    ).fetchall()
if mode == "verbose":
    for run_id, state in rows:
        print(f"  {run_id:45} {state}")
ok = sum(1 for _, state in rows if state == "success")
sys.exit(0 if ok == expected and len(rows) == expected else 1)
PY
}

# --- Airflow metadata DB and DAG --------------------------------------------------------
say "airflow db migrate ($DB_PATH)"
airflow db migrate >"$LOG_DIR/db-migrate.log" 2>&1
say "airflow dags reserialize"
airflow dags reserialize >"$LOG_DIR/dags-reserialize.log" 2>&1
airflow dags unpause "$DAG_ID" >"$LOG_DIR/dags-unpause.log" 2>&1

# --- processes --------------------------------------------------------------------------
start_on_free_port api-server api_ports api_ready airflow api-server --host 127.0.0.1

if ((WITH_SIDECAR)); then
    # Secure by default: the sidecar accepts JWTs signed with Airflow's own secret; the shim and
    # the CLI send one (role scheduler, so the shim may Tick) from SIDECAR_TOKEN.
    export SIDECAR_JWT_SECRET="$AIRFLOW__API_AUTH__JWT_SECRET"
    SIDECAR_TOKEN="$(airflow-sidecar token jwt --subject demo --role scheduler --valid-for 86400)"
    export SIDECAR_TOKEN
    start_bg sidecar airflow-sidecar serve --database-url "$SIDECAR_DATABASE_URL" --listen "$SIDECAR_LISTEN"
    wait_for sidecar "${PIDS[-1]}" 60 sidecar_ready
    sidecar_ready  # exports SIDECAR_TARGET (the bound port) for the scheduler and the CLI
    say "sidecar listens on $SIDECAR_TARGET"
    start_on_free_port scheduler scheduler_ports scheduler_ready airflow-sidecar scheduler
else
    start_on_free_port scheduler scheduler_ports scheduler_ready airflow scheduler
fi

# --- the backfill -----------------------------------------------------------------------
BACKFILL_START=$SECONDS
if ((WITH_SIDECAR)); then
    say "airflow-sidecar backfill create --dag-id $DAG_ID --from-date $DEMO_FROM --to-date $DEMO_TO --max-active-runs 2 --watch"
    airflow-sidecar backfill --target "$SIDECAR_TARGET" create --dag-id "$DAG_ID" \
        --from-date "$DEMO_FROM" --to-date "$DEMO_TO" --max-active-runs 2 --watch
else
    say "airflow backfill create --dag-id $DAG_ID --from-date $DEMO_FROM --to-date $DEMO_TO --max-active-runs 2"
    airflow backfill create --dag-id "$DAG_ID" --from-date "$DEMO_FROM" --to-date "$DEMO_TO" \
        --max-active-runs 2 >"$LOG_DIR/backfill-create.log" 2>&1
fi

# --watch returns when the backfill ends; the database is the judge either way.
deadline=$((SECONDS + DEMO_TIMEOUT))
until check_runs; do
    for pid in "${PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null || { echo "error: a background process died (pid $pid)" >&2; exit 1; }
    done
    if ((SECONDS >= deadline)); then
        echo "error: the backfill's runs did not all succeed within ${DEMO_TIMEOUT}s:" >&2
        check_runs verbose >&2 || true
        exit 1
    fi
    sleep 1
done
check_runs verbose
say "backfill of $DEMO_EXPECTED_RUNS runs succeeded in $((SECONDS - BACKFILL_START))s"
