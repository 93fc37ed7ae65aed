"""Running one script of backfill requests through Airflow 3.3.2 and through the sidecar.

A :class:`Request` is one ``_create_backfill`` call (optionally after arranging existing
runs, optionally completing the backfill afterwards so that the next request for the same
DAG is allowed). :func:`run_script` feeds the same requests, in the same order, to
Airflow's own code on one database (a subprocess running ``airflow_oracle.py``) and to
``BackfillEngine.create(mode=EAGER)`` on the other, and returns both outcomes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar import errors
from sidecar.engine import BackfillEngine, BackfillSpec, DryRun, EngineConfig, Mode, ReprocessBehavior
from sidecar.store import connect, prepare
from tests.support.airflow import process_environ
from tests.support.postgres import pg_connect

ORACLE = Path(__file__).resolve().parent / "airflow_oracle.py"
UTC = dt.UTC
#: ``triggering_user_name`` of every request (the API would pass the logged-in user).
USER = "parity-user"


def at(year: int, month: int, day: int, hour: int = 0) -> dt.datetime:
    """A UTC datetime (shorthand for the case tables)."""
    return dt.datetime(year, month, day, hour, tzinfo=UTC)


@dataclass(frozen=True)
class Request:
    """One backfill request, and what to do around it."""

    name: str
    dag_id: str
    from_date: dt.datetime
    to_date: dt.datetime
    reverse: bool = False
    reprocess: str | None = "none"
    conf: dict[str, Any] | None = None
    max_active_runs: int = 3
    arrange: Sequence[tuple[int, str]] = ()
    """``(index, state)``: existing scheduled runs to make first, by their index in the range."""
    complete: bool = True
    """Mark the backfill completed afterwards (both sides), so the DAG is free again."""
    discard: bool = False
    """Delete what Airflow wrote (for requests Airflow wrongly accepts and the sidecar refuses)."""
    run_on_latest_version: bool | None = None
    """As in the request body (None: resolved as Airflow's API and CLI resolve it)."""


@dataclass
class Outcome:
    """What one side answered to each request: a backfill id, or ``(error class, message)``."""

    results: dict[str, dict[str, Any]] = field(default_factory=dict)


def _arrange_ops(requests: Sequence[Request]) -> list[dict[str, Any]]:
    return [
        {
            "op": "arrange",
            "dag_id": r.dag_id,
            "from_date": r.from_date.isoformat(),
            "to_date": r.to_date.isoformat(),
            "index": index,
            "state": state,
        }
        for r in requests
        for index, state in r.arrange
    ]


def _oracle_ops(requests: Sequence[Request]) -> list[dict[str, Any]]:
    ops = _arrange_ops(requests)
    for r in requests:
        ops.append(
            {
                "op": "backfill",
                "name": r.name,
                "dag_id": r.dag_id,
                "from_date": r.from_date.isoformat(),
                "to_date": r.to_date.isoformat(),
                "reverse": r.reverse,
                "reprocess_behavior": r.reprocess,
                "dag_run_conf": r.conf,
                "max_active_runs": r.max_active_runs,
                "triggering_user_name": USER,
                "discard": r.discard,
                "run_on_latest_version": r.run_on_latest_version,
            }
        )
        if r.complete:
            ops.append({"op": "complete", "dag_id": r.dag_id})
    ops.append({"op": "mutation_hook"})
    return ops


def start_oracle(env: Mapping[str, str], ops: list[dict[str, Any]]) -> subprocess.Popen[str]:
    """Start ``airflow_oracle.py`` on the database of ``env`` with ``ops`` on its stdin."""
    process = subprocess.Popen(
        [sys.executable, str(ORACLE)],
        env=process_environ(env),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None
    process.stdin.write(json.dumps(ops))  # the oracle reads all of it before writing anything
    process.stdin.close()
    process.stdin = None  # so that communicate() does not flush it again
    return process


def finish_oracle(process: subprocess.Popen[str], timeout: float = 240.0) -> list[dict[str, Any]]:
    """Wait for the oracle and return its results (its output's tail on failure)."""
    out, err = process.communicate(timeout=timeout)
    code = process.returncode
    lines = [line for line in out.splitlines() if line.startswith("RESULTS ")]
    if code != 0 or not lines:
        raise RuntimeError(f"airflow_oracle.py exited with {code}:\n{(out + err)[-6000:]}")
    results: list[dict[str, Any]] = json.loads(lines[-1][len("RESULTS ") :])
    return results


def spec_of(r: Request) -> BackfillSpec:
    """The sidecar request equal to Airflow's ``_create_backfill`` arguments."""
    return BackfillSpec(
        dag_id=r.dag_id,
        from_date=r.from_date,
        to_date=r.to_date,
        run_backwards=r.reverse,
        reprocess_behavior=ReprocessBehavior(r.reprocess or "none"),
        max_active_runs=r.max_active_runs,
        dag_run_conf=r.conf,
        mode=Mode.EAGER,
        triggering_user_name=USER,
        run_on_latest_version=r.run_on_latest_version,
    )


async def _run_sidecar(database_url: str, sidecar_db: str, requests: Sequence[Request]) -> Outcome:
    outcome = Outcome()
    db = connect(database_url)
    try:
        await prepare(db)
        # Small batches: the rows must not depend on where batches split.
        engine = BackfillEngine(db, EngineConfig(batch_size=4))
        for r in requests:
            try:
                view = await engine.create(spec_of(r))
                assert not isinstance(view, DryRun)
                outcome.results[r.name] = {"backfill_id": view.id}
            except errors.SidecarError as exc:
                outcome.results[r.name] = {"error": [type(exc).__name__, exc.message], "field": exc.field}
            if r.complete:
                conn = pg_connect(sidecar_db)
                try:
                    with conn.cursor() as cur:
                        cur.execute(
                            "UPDATE backfill SET completed_at = now()"
                            " WHERE dag_id = %s AND completed_at IS NULL",
                            (r.dag_id,),
                        )
                finally:
                    conn.close()
    finally:
        await db.dispose()
    return outcome


def run_script(
    requests: Sequence[Request],
    *,
    airflow_env: Mapping[str, str],
    sidecar_env: Mapping[str, str],
    sidecar_url: str,
    sidecar_db: str,
) -> tuple[Outcome, Outcome]:
    """Run ``requests`` through Airflow (its database) and the sidecar (its own); return both outcomes.

    The existing runs are arranged in both databases by Airflow's own code (two
    subprocesses, in parallel), so they are identical before either side writes.
    """
    names = [r.name for r in requests]
    if len(set(names)) != len(names):
        raise ValueError("request names must be unique")
    airflow_process = start_oracle(airflow_env, _oracle_ops(requests))
    try:
        arrange_ops = _arrange_ops(requests)
        if arrange_ops:
            finish_oracle(start_oracle(sidecar_env, arrange_ops))
        sidecar = asyncio.run(_run_sidecar(sidecar_url, sidecar_db, requests))
        airflow_results = finish_oracle(airflow_process)
    finally:
        if airflow_process.poll() is None:  # only on a failure above: do not leave it running
            airflow_process.kill()
            airflow_process.communicate()
    airflow = Outcome()
    for op, result in zip(_oracle_ops(requests), airflow_results, strict=True):
        if op["op"] == "backfill":
            airflow.results[op["name"]] = result
        elif op["op"] == "mutation_hook":
            airflow.results["mutation_hook"] = result
    return airflow, sidecar
