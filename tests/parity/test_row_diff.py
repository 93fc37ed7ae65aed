"""Row parity: Airflow 3.3.2's ``_create_backfill`` and the sidecar write the same rows.

The same script of requests (:mod:`tests.parity.cases`) runs through Airflow's own code
into one database and through ``BackfillEngine.create(mode=EAGER)`` into an identical
clone; then every row of ``backfill``, ``backfill_dag_run``, ``dag_run``,
``task_instance`` and ``task_instance_history`` is compared column by column
(:mod:`tests.parity.rowdiff`: natural keys, ids and timestamps aside).
"""

from __future__ import annotations

import datetime as dt

import pytest

from tests.parity.cases import ROW_CASES
from tests.parity.conftest import ParityRun
from tests.parity.rowdiff import TABLES, snapshot
from tests.parity.rowdiff import diff as row_diff
from tests.parity.versions import AIRFLOW_MINOR, WRITES_EMPTY_BACKFILLS, WRITES_PARTITIONS

pytestmark = [pytest.mark.postgres, pytest.mark.airflow]


@pytest.fixture(scope="module")
def snapshots(parity_run: ParityRun) -> tuple[dict, dict]:  # type: ignore[type-arg]
    """The normalised rows of both databases after the script."""
    airflow, sidecar = snapshot(parity_run.dbs.airflow_name), snapshot(parity_run.dbs.sidecar_name)
    if WRITES_EMPTY_BACKFILLS:  # requests the sidecar refuses (tests/parity/versions.py)
        with_runs = {key[0] for key in airflow["backfill_dag_run"]}
        airflow["backfill"] = {k: v for k, v in airflow["backfill"].items() if k in with_runs}
    return airflow, sidecar


@pytest.mark.parametrize("case", ROW_CASES, ids=lambda c: c.name)
def test_both_sides_create_the_backfill(parity_run: ParityRun, case: object) -> None:
    name = case.name  # type: ignore[attr-defined]
    assert "backfill_id" in parity_run.airflow.results[name], parity_run.airflow.results[name]
    assert "backfill_id" in parity_run.sidecar.results[name], parity_run.sidecar.results[name]


@pytest.mark.parametrize("table", TABLES)
def test_rows_equal_column_by_column(snapshots: tuple[dict, dict], table: str) -> None:  # type: ignore[type-arg]
    airflow, sidecar = snapshots
    assert airflow[table], f"the script wrote no {table} rows: the comparison would prove nothing"
    differences = row_diff(airflow, sidecar, tables=[table])
    shown = "\n".join(str(d) for d in differences[:40])
    assert not differences, f"{len(differences)} differing columns in {table}:\n{shown}"


def test_the_script_covers_every_decision(snapshots: tuple[dict, dict]) -> None:  # type: ignore[type-arg]
    """Guard against a diff that proves little: Airflow's side holds every kind of row."""
    from tests.parity.conftest import BUNDLE_VERSION

    airflow, _ = snapshots
    reasons = {row["exception_reason"] for row in airflow["backfill_dag_run"].values()}
    assert reasons == {None, "in flight", "already exists"}
    runs = list(airflow["dag_run"].values())
    cleared = [r for r in runs if r["clear_number"] > 0]
    assert cleared and all(r["run_type"] == "backfill" and r["backfill_id"] for r in cleared)
    assert {r["run_id"].split("__")[0] for r in cleared} == {"scheduled"}
    # A reprocessed run takes the backfill's conf (not on 3.1: the contract's clear_sets_conf).
    assert ({"from": "backfill"} in [r["conf"] for r in cleared]) == (AIRFLOW_MINOR != "3.1")
    assert {r["bundle_version"] for r in runs} == {None, BUNDLE_VERSION}
    tis = list(airflow["task_instance"].values())
    assert {"removed", None} <= {t["state"] for t in tis}
    assert max(t["map_index"] for t in tis) >= 5  # literal mapping, nested mapped groups
    assert {t["custom_operator_name"] for t in tis} >= {"Renamed!", "@task", "EmptyOperator"}
    assert {h["state"] for h in airflow["task_instance_history"].values()} >= {"success", "failed"}
    # Runs of an older DAG version, reprocessed on the latest (tests/parity/dags/parity_evolving.py).
    evolving = {k[1:]: t for k, t in airflow["task_instance"].items() if k[0] == "parity_evolving"}
    cleared_run = "scheduled__2024-04-02T00:00:00+00:00"
    assert evolving[(cleared_run, "c", -1)]["state"] == "removed"
    assert (cleared_run, "d", -1) in evolving
    assert evolving[(cleared_run, "mapped", 2)]["state"] == "removed"
    assert len({t["dag_version_id"] for t in evolving.values()}) == 2  # the running run stays on v1


def test_diff_reports_a_differing_column(snapshots: tuple[dict, dict]) -> None:  # type: ignore[type-arg]
    """The comparison itself is not vacuous: one changed value is one difference."""
    import copy

    airflow, _ = snapshots
    changed = copy.deepcopy(airflow)
    key = next(iter(changed["task_instance"]))
    changed["task_instance"][key]["priority_weight"] += 1
    found = row_diff(airflow, changed)
    assert [(d.table, d.key, d.column) for d in found] == [("task_instance", key, "priority_weight")]


@pytest.mark.skipif(not WRITES_PARTITIONS, reason="the sidecar refuses partitioned DAGs on this minor")
def test_the_script_covers_partitions(snapshots: tuple[dict, dict]) -> None:  # type: ignore[type-arg]
    """Partitions are in the diff: no logical date, keys in the zone, a reprocessed partition's
    second and third run, a repeated key across a DST fall-back, partitions after now."""
    airflow, sidecar = snapshots
    runs = {k: r for k, r in airflow["dag_run"].items() if r["partition_key"] is not None}
    backfilled = [r for r in runs.values() if r["run_type"] == "backfill"]
    assert backfilled and all(
        r["logical_date"] is None and r["data_interval_start"] is None for r in runs.values()
    )
    assert all(
        r["run_id"].endswith("__<random8>") and r["run_after"] == r["partition_date"] for r in backfilled
    )
    assert max(key[2] for key in runs) == 3  # arranged, reprocessed, reprocessed again
    daily = {r["partition_key"] for r in runs.values() if r["dag_id"] == "parity_partitioned"}
    assert "2024-01-01" in daily  # Taipei's midnight, 16:00 UTC the day before
    hourly = [r["partition_key"] for r in backfilled if r["dag_id"] == "parity_partitioned_hourly"]
    assert hourly.count("2024-10-27T02:00:00") == 2
    now = dt.datetime.now(dt.UTC)
    assert any(r["partition_date"] > now for r in backfilled)
    slots = [s for s in airflow["backfill_dag_run"].values() if s["partition_key"] is not None]
    assert {s["exception_reason"] for s in slots} == {None, "in flight", "already exists"}
    assert all(s["logical_date"] is None for s in slots)
    assert len([r for r in sidecar["dag_run"].values() if r["partition_key"] is not None]) == len(runs)
