"""The README's "Running it against your Airflow" lines, run as they are, end in a successful backfill.

The lines between the ``readme-setup`` marker's fenced block are read from README.md and run
in bash (each as a user would paste it), against a real Airflow 3.3.2 on PostgreSQL: once
with the JWT secret in ``airflow.cfg`` (no ``AIRFLOW__API_AUTH__JWT_SECRET``), once in the
environment. The shell then creates a backfill with the CLI; Airflow's real scheduler, run by
the README's own ``airflow-sidecar scheduler`` line, takes it to success.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.airflow import JWT_SECRET, airflow_environ, process_environ
from tests.support.fixtures import DAGS_FOLDER, AirflowDatabase
from tests.support.ports import free_port
from tests.support.postgres import pg_connect
from tests.support.stack import start_api_server

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.airflow]

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- readme-setup"
DAG_ID = "sidecar_e2e_three"


def readme_setup_lines() -> list[str]:
    """The lines of the fenced block after the marker, exactly as in README.md."""
    lines = README.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(MARKER))
    assert lines[start + 1] == "```bash", "the marker must stand right above a ```bash block"
    end = lines.index("```", start + 2)
    return lines[start + 2 : end]


def test_the_setup_block_is_found_and_ends_with_doctor() -> None:
    lines = readme_setup_lines()
    assert lines[-1].startswith("airflow-sidecar doctor")
    assert any("airflow config get-value api_auth jwt_secret" in line for line in lines)


def _kill_group(pgid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        for _ in range(60):
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            subprocess.run(["sleep", "0.5"], check=False)


@pytest.mark.timeout(900)
@pytest.mark.parametrize(("secret_in", "day"), [("airflow.cfg", "2024-03"), ("environment", "2024-04")])
def test_readme_setup_lines_run_a_backfill_to_success(
    airflow_db: AirflowDatabase, tmp_path: Path, secret_in: str, day: str
) -> None:
    home = tmp_path / "airflow-home"
    port = free_port()
    env = airflow_environ(home, airflow_db.psycopg2_url, DAGS_FOLDER)
    # Where the user's sidecar listens, should 50051 be taken on this machine (see the README).
    env |= {"SIDECAR_LISTEN": f"127.0.0.1:{port}", "SIDECAR_TARGET": f"127.0.0.1:{port}"}
    if secret_in == "airflow.cfg":
        del env["AIRFLOW__API_AUTH__JWT_SECRET"], env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        (home / "airflow.cfg").write_text(
            f"[api_auth]\njwt_secret = {JWT_SECRET}\n\n[database]\nsql_alchemy_conn = {airflow_db.psycopg2_url}\n"
        )
    shell_env = {k: v for k, v in process_environ(env).items() if not k.startswith("SIDECAR_")}
    shell_env |= {k: v for k, v in env.items() if k.startswith("SIDECAR_")}
    api_server = start_api_server(process_environ(env), tmp_path, timeout=180)
    script = "\n".join(
        [
            *readme_setup_lines(),
            'echo "doctor exit $?"',
            f"airflow-sidecar backfill create --dag-id {DAG_ID} --from-date {day}-01 --to-date {day}-03 "
            "--max-active-runs 2 --watch",
            'echo "backfill exit $?"',
        ]
    )
    (tmp_path / "setup.sh").write_text(script + "\n")
    shell = subprocess.Popen(
        ["bash", str(tmp_path / "setup.sh")],
        cwd=tmp_path,
        env=shell_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = shell.communicate(timeout=720)
    finally:
        _kill_group(shell.pid)
        api_server.stop()
    logs = {name: (tmp_path / name).read_text() for name in ("sidecar.log", "scheduler.log")}
    context = f"{output}\n--- sidecar.log\n{logs['sidecar.log'][-3000:]}\n--- scheduler.log\n{logs['scheduler.log'][-3000:]}"
    assert "doctor exit 0" in output, context
    assert "backfill exit 0" in output, context
    assert "sidecar shim: ticking 127.0.0.1:" in logs["scheduler.log"]
    assert "with bearer token from SIDECAR_TOKEN" in logs["scheduler.log"]
    assert "sidecar shim: first Tick answered by" in logs["scheduler.log"]
    with pg_connect(airflow_db.name) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT state FROM dag_run WHERE dag_id = %s AND backfill_id IS NOT NULL"
            " AND logical_date >= %s AND logical_date < %s",
            (DAG_ID, f"{day}-01", f"{day}-04"),
        )
        assert sorted(r[0] for r in cur.fetchall()) == ["success"] * 3
