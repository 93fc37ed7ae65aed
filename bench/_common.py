"""What the benchmark scripts share: fresh Airflow 3.3.2 databases, the sidecar's eager path, Airflow's own path.

Every database is a clone of the migrated Airflow template with ``bench/dags``
serialized (the same machinery as the tests: :mod:`tests.support.templates`), so a
measurement starts from an empty, analysed schema with Airflow's indexes and keys.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sidecar.engine import BackfillEngine, BackfillSpec, EngineConfig, Mode, settle_heap
from sidecar.store import connect, prepare
from tests.support.airflow import airflow_environ, process_environ
from tests.support.postgres import drop_database, fresh_airflow_database
from tests.support.templates import migrate_template, serialized_dags_template

ROOT = Path(__file__).resolve().parent.parent
DAGS = ROOT / "bench" / "dags"
UTC = dt.UTC
_WORK = Path(tempfile.gettempdir()) / "airflow-sidecar-bench"


def bench_template() -> str:
    """The template database: Airflow's schema plus ``bench/dags`` serialized (built once)."""
    for sub in ("template", "dags"):
        (_WORK / sub).mkdir(parents=True, exist_ok=True)
    base = migrate_template(work_dir=_WORK / "template")
    name, _ = serialized_dags_template(DAGS, base=base.name, unpause=True, work_dir=_WORK / "dags")
    return name


class FreshDatabase:
    """A throw-away clone of the bench template: ``with FreshDatabase(t) as db: db.asyncpg_url``."""

    def __init__(self, template: str, label: str) -> None:
        self.name = f"sidecar_bench_{label}_{os.getpid()}"
        self.asyncpg_url, self.psycopg2_url = fresh_airflow_database(self.name, template=template)

    def __enter__(self) -> FreshDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        drop_database(self.name)

    def airflow_env(self) -> dict[str, str]:
        """Airflow's environment for this database (for a subprocess that imports Airflow)."""
        return process_environ(airflow_environ(_WORK / f"home-{self.name}", self.psycopg2_url, DAGS))


def days(start: dt.datetime, count: int, step: dt.timedelta) -> tuple[dt.datetime, dt.datetime]:
    """``(from_date, to_date)`` spanning exactly ``count`` slots of ``step`` from ``start``."""
    return start, start + step * (count - 1)


async def _sidecar_create(url: str, spec: BackfillSpec, batch_size: int) -> tuple[float, int]:
    db = connect(url)
    try:
        await prepare(db)
        engine = BackfillEngine(db, EngineConfig(batch_size=batch_size))
        await engine.warm_up()  # as ``serve`` does at start: the create is one against a running server
        settle_heap()  # as ``serve`` does after it
        started = time.perf_counter()
        view = await engine.create(spec)
        elapsed = time.perf_counter() - started
        return elapsed, view.progress.written  # type: ignore[union-attr]
    finally:
        await db.dispose()


def sidecar_create(
    url: str,
    dag_id: str,
    start: dt.datetime,
    end: dt.datetime,
    *,
    mode: Mode = Mode.EAGER,
    batch_size: int = 1000,
    max_active_runs: int = 10,
) -> tuple[float, int]:
    """Seconds for ``BackfillEngine.create`` (eager: every row written and committed) and slots written."""
    spec = BackfillSpec(
        dag_id=dag_id, from_date=start, to_date=end, max_active_runs=max_active_runs, mode=mode
    )
    return asyncio.run(_sidecar_create(url, spec, batch_size))


_AIRFLOW_CREATE = """
import datetime as dt, json, sys, time
from airflow.models.backfill import _create_backfill
args = json.loads(sys.argv[1])
started = time.perf_counter()
b = _create_backfill(
    dag_id=args["dag_id"],
    from_date=dt.datetime.fromisoformat(args["from"]),
    to_date=dt.datetime.fromisoformat(args["to"]),
    max_active_runs=10,
    reverse=False,
    dag_run_conf=None,
    triggering_user_name="bench",
)
print(json.dumps({"seconds": time.perf_counter() - started, "id": b.id}))
"""


def airflow_create(db: FreshDatabase, dag_id: str, start: dt.datetime, end: dt.datetime) -> float:
    """Seconds Airflow 3.3.2's own ``_create_backfill`` takes (import time excluded), in a subprocess."""
    payload = json.dumps({"dag_id": dag_id, "from": start.isoformat(), "to": end.isoformat()})
    done = subprocess.run(
        [sys.executable, "-c", _AIRFLOW_CREATE, payload],
        env=db.airflow_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"Airflow's _create_backfill failed:\n{done.stderr[-3000:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])


def median_of(repeats: int, measure: Callable[[], float]) -> tuple[float, list[float]]:
    """The median of ``repeats`` measurements, and all of them."""
    values = [measure() for _ in range(repeats)]
    return statistics.median(values), values


def row(*cells: Any) -> str:
    """A Markdown table row."""
    return "| " + " | ".join(str(c) for c in cells) + " |"
