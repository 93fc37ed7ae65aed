"""Versions pinned like Airflow: a DAG changed mid-backfill does not change the runs written later.

Airflow's ``_create_backfill`` writes every run of a backfill in one transaction, on the DAG
version that is the latest then and with the DAG's bundle version then; reprocessed runs move
to that version with ``run_on_latest_version`` and stay on their own without it. The sidecar
writes a windowed backfill's runs over many ticks: here the DAG changes (a new file, a new git
commit, reserialised by Airflow) after the first window, and the runs the ticks write after
the change must still equal, column by column, what Airflow's own ``_create_backfill`` wrote
before it.

Four DAGs of one shape, each a case: on the default ``dags-folder`` bundle (Airflow's
``LocalDagBundle``, unversioned) and on a git bundle (the git provider's ``GitDagBundle`` over a
repository made here, versioned: ``bundle_version`` is the commit), each with
``run_on_latest_version`` true and false. Each DAG has finished runs of version 1 in its
range, reprocessed (``completed``) after the first window; version 2 is the latest when the
backfills are created; version 3 appears mid-backfill, on the sidecar's side only.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sidecar.engine import BackfillEngine, BackfillSpec, DryRun, EngineConfig, Mode, ReprocessBehavior
from sidecar.store import connect, prepare
from tests.parity.harness import USER, at, finish_oracle, start_oracle
from tests.parity.rowdiff import TABLES, snapshot
from tests.parity.rowdiff import diff as row_diff
from tests.support.airflow import airflow_environ
from tests.support.dags import metadata_query, serialize_dags
from tests.support.postgres import drop_database, fresh_airflow_database, pg_connect, psycopg2_url
from tests.support.templates import TemplateInfo

pytestmark = [pytest.mark.postgres, pytest.mark.airflow]

FROM, TO = at(2024, 1, 1), at(2024, 1, 8)
#: Finished runs of version 1, by index in the range: after the first window (3 runs).
EXISTING = ((4, "success"), (6, "failed"))
MAX_ACTIVE_RUNS = 1
LOOKAHEAD = 2
GIT_BUNDLE = "pinning-git"


@dataclass(frozen=True)
class Case:
    """One DAG of the test and how its backfill is asked for."""

    dag_id: str
    bundle: str
    run_on_latest_version: bool


CASES = tuple(
    Case(f"pin_{where}_{'latest' if latest else 'own'}", bundle, latest)
    for where, bundle in (("local", "dags-folder"), ("git", GIT_BUNDLE))
    for latest in (True, False)
)


def dag_source(dag_id: str, version: int) -> str:
    """A DAG file: version 2 adds task ``c`` and retries more; version 3 drops ``b`` and ``c``, adds ``d``."""
    tasks = {1: ["a", "b"], 2: ["a", "b", "c"], 3: ["a", "d"]}[version]
    chain = " >> ".join(f'EmptyOperator(task_id="{t}", pool_slots={version})' for t in tasks)
    return textwrap.dedent(
        f"""\
        import pendulum
        from airflow.providers.standard.operators.empty import EmptyOperator
        from airflow.sdk import DAG

        with DAG(
            dag_id="{dag_id}",
            schedule="@daily",
            start_date=pendulum.datetime(2023, 1, 1, tz="UTC"),
            catchup=False,
            default_args={{"retries": {version}}},
        ):
            {chain}
        """
    )


class DagSources:
    """The DAG files: a plain folder (the dags-folder bundle) and a git repository (the git bundle)."""

    def __init__(self, root: Path) -> None:
        self.folder = root / "dags"
        self.repo = root / "repo"
        self.folder.mkdir()
        self.repo.mkdir()
        self._git("init", "-q", "-b", "main")
        self._git("config", "user.email", "pinning@example.com")
        self._git("config", "user.name", "pinning")

    def _git(self, *args: str) -> str:
        done = subprocess.run(["git", *args], cwd=self.repo, check=True, capture_output=True, text=True)
        return done.stdout.strip()

    def write(self, version: int) -> str:
        """Every DAG at ``version``; returns the git commit."""
        for case in CASES:
            target = self.folder if case.bundle == "dags-folder" else self.repo
            (target / f"{case.dag_id}.py").write_text(dag_source(case.dag_id, version))
        self._git("add", "-A")
        self._git("commit", "-q", "-m", f"version {version}")
        return self._git("rev-parse", "HEAD")


def bundle_environ(home: Path, url: str, sources: DagSources, storage: Path) -> dict[str, str]:
    """Airflow's environment with both bundles configured."""
    bundles = [
        {
            "name": "dags-folder",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {},
        },
        {
            "name": GIT_BUNDLE,
            "classpath": "airflow.providers.git.bundles.git.GitDagBundle",
            "kwargs": {"tracking_ref": "main", "repo_url": str(sources.repo)},
        },
    ]
    return airflow_environ(
        home,
        url,
        sources.folder,
        AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST=json.dumps(bundles),
        AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH=str(storage),
        # Reserialise at once, not 30 s after the last time.
        AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL="0",
    )


def _versions(env: dict[str, str], dag_id: str) -> list[tuple[object, ...]]:
    return metadata_query(
        env,
        "SELECT version_number, id, bundle_version FROM dag_version WHERE dag_id = %s ORDER BY 1",
        (dag_id,),
    )


@dataclass(frozen=True)
class PinningRun:
    """Both databases after both sides wrote their backfills, and what each version is."""

    airflow_db: str
    sidecar_db: str
    commits: dict[int, str]
    versions: dict[str, list[tuple[object, ...]]]
    """Per DAG, the sidecar database's ``(version_number, id, bundle_version)`` at the end."""


async def _sidecar_side(url: str, db_name: str) -> None:
    db = connect(url)
    try:
        await prepare(db)
        engine = BackfillEngine(db, EngineConfig(batch_size=2, lookahead=LOOKAHEAD))
        for case in CASES:
            view = await engine.create(
                BackfillSpec(
                    dag_id=case.dag_id,
                    from_date=FROM,
                    to_date=TO,
                    reprocess_behavior=ReprocessBehavior.COMPLETED,
                    max_active_runs=MAX_ACTIVE_RUNS,
                    mode=Mode.WINDOWED,
                    triggering_user_name=USER,
                    run_on_latest_version=case.run_on_latest_version,
                )
            )
            assert not isinstance(view, DryRun)
            assert view.progress.written == MAX_ACTIVE_RUNS + LOOKAHEAD  # the first window only
            # Read back as the API shows it (fields 19 and 20).
            assert view.run_on_latest_version is case.run_on_latest_version
            assert (view.bundle_version is None) is (case.bundle == "dags-folder")
    finally:
        await db.dispose()


async def _tick_to_the_end(url: str) -> int:
    db = connect(url)
    try:
        await prepare(db)
        engine = BackfillEngine(db, EngineConfig(batch_size=2, lookahead=LOOKAHEAD))
        written = 0
        for _ in range(20):
            result = await engine.tick()
            written += result.runs_written
            if not result.materializing:
                break
        return written
    finally:
        await db.dispose()


def _set_max_active_runs(db_name: str, value: int) -> None:
    conn = pg_connect(db_name)
    try:
        with conn.cursor() as cur:
            cur.execute("UPDATE backfill SET max_active_runs = %s", (value,))
    finally:
        conn.close()


@pytest.fixture(scope="module")
def pinning_run(
    airflow_template: TemplateInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PinningRun]:
    """Arrange version 1's runs, serialise version 2, then let both sides backfill (version 3 midway)."""
    root = tmp_path_factory.mktemp("pinning")
    sources = DagSources(root)
    pid = os.getpid()
    base, airflow_db, sidecar_db = (f"sidecar_pinning_{kind}_{pid}" for kind in ("base", "af", "sc"))
    commits = {1: sources.write(1)}
    fresh_airflow_database(base, template=airflow_template.name)
    try:
        base_env = bundle_environ(root / "home-base", psycopg2_url(base), sources, root / "bundles")
        serialize_dags(base_env)
        finish_oracle(
            start_oracle(
                base_env,
                [
                    {
                        "op": "arrange",
                        "dag_id": case.dag_id,
                        "from_date": FROM.isoformat(),
                        "to_date": TO.isoformat(),
                        "index": index,
                        "state": state,
                    }
                    for case in CASES
                    for index, state in EXISTING
                ],
            )
        )
        commits[2] = sources.write(2)
        serialize_dags(base_env)
        _, airflow_url = fresh_airflow_database(airflow_db, template=base)
        sidecar_url, sidecar_pg_url = fresh_airflow_database(sidecar_db, template=base)
    finally:
        drop_database(base)
    try:
        airflow_env = bundle_environ(root / "home-af", airflow_url, sources, root / "bundles")
        sidecar_env = bundle_environ(root / "home-sc", sidecar_pg_url, sources, root / "bundles")
        finish_oracle(
            start_oracle(
                airflow_env,
                [
                    {
                        "op": "backfill",
                        "name": case.dag_id,
                        "dag_id": case.dag_id,
                        "from_date": FROM.isoformat(),
                        "to_date": TO.isoformat(),
                        "reverse": False,
                        "reprocess_behavior": "completed",
                        "dag_run_conf": None,
                        "max_active_runs": MAX_ACTIVE_RUNS,
                        "triggering_user_name": USER,
                        "run_on_latest_version": case.run_on_latest_version,
                    }
                    for case in CASES
                ],
            )
        )
        asyncio.run(_sidecar_side(sidecar_url, sidecar_db))
        # The DAG changes mid-backfill: version 3, a new commit of the git bundle.
        commits[3] = sources.write(3)
        serialize_dags(sidecar_env)
        # Let the ticks write the rest without a scheduler finishing runs: the window is
        # widened as if the runs before had finished, then put back for the row diff.
        _set_max_active_runs(sidecar_db, 100)
        assert asyncio.run(_tick_to_the_end(sidecar_url)) > 0
        _set_max_active_runs(sidecar_db, MAX_ACTIVE_RUNS)
        yield PinningRun(
            airflow_db,
            sidecar_db,
            commits,
            {case.dag_id: _versions(sidecar_env, case.dag_id) for case in CASES},
        )
    finally:
        if os.environ.get("SIDECAR_KEEP_TEST_DB") != "1":
            drop_database(airflow_db)
            drop_database(sidecar_db)


def _of_dag(rows: dict[str, dict[tuple[object, ...], dict[str, object]]], dag_id: str) -> dict:  # type: ignore[type-arg]
    """The snapshot's rows of one DAG (every natural key starts with the DAG id)."""
    out: dict[str, dict[tuple[object, ...], dict[str, object]]] = {}
    for table, keyed in rows.items():
        out[table] = {}
        for key, row in keyed.items():
            head = key[0][0] if table == "backfill_dag_run" else key[0]
            if head == dag_id:
                out[table][key] = row
    return out


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.dag_id)
def test_rows_written_after_the_dag_changed_equal_airflows(pinning_run: PinningRun, case: Case) -> None:
    versions = pinning_run.versions[case.dag_id]
    assert [v[0] for v in versions] == [1, 2, 3], "version 3 must exist: a drifting writer would use it"
    airflow = _of_dag(snapshot(pinning_run.airflow_db), case.dag_id)
    sidecar = _of_dag(snapshot(pinning_run.sidecar_db), case.dag_id)
    assert len(airflow["backfill_dag_run"]) == 8
    differences = row_diff(airflow, sidecar, tables=TABLES)
    shown = "\n".join(str(d) for d in differences[:40])
    assert not differences, f"{len(differences)} differing columns:\n{shown}"

    # What the diff proved, spelled out: no row of the backfill is on version 3.
    v1, v2, v3 = (v[1] for v in versions)
    runs = sidecar["dag_run"]
    assert v3 not in {r["created_dag_version_id"] for r in runs.values()}
    assert v3 not in {t["dag_version_id"] for t in sidecar["task_instance"].values()}
    reprocessed = {k for k, r in runs.items() if r["clear_number"] == 1}
    assert len(reprocessed) == len(EXISTING)
    for key, run in runs.items():
        moved = key not in reprocessed or case.run_on_latest_version
        assert run["created_dag_version_id"] == (v2 if moved else v1)
        if case.bundle == GIT_BUNDLE:
            assert run["bundle_version"] == pinning_run.commits[2 if moved else 1]
        else:
            assert run["bundle_version"] is None
    tasks = {(k[1], k[2]) for k in sidecar["task_instance"]}
    new_run = next(r["run_id"] for k, r in runs.items() if k not in reprocessed)
    assert {t for r, t in tasks if r == new_run} == {"a", "b", "c"}  # version 2's tasks, not 3's
