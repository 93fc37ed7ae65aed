"""The per-version row contracts: revision lookup, and rows and tables without a version's missing columns.

Each contract is also checked against its Airflow's real schema by
``tests/integration/test_airflow_versions.py``, run in every version's environment.
"""

from __future__ import annotations

import pytest

from sidecar.store._tables import AIRFLOW_TABLES
from sidecar.store._versions import (
    AIRFLOW_3_1,
    AIRFLOW_3_2,
    AIRFLOW_3_3,
    CONTRACTS,
    NEWEST,
    SUPPORTED,
    SUPPORTED_RANGE,
    contract_for_revision,
)


@pytest.mark.parametrize(
    ("revision", "minor"),
    [
        ("cc92b33c6709", "3.1"),  # 3.1.0 .. 3.1.7
        ("509b94a1042d", "3.1"),  # 3.1.8
        ("1d6611b6ab7c", "3.2"),
        ("d2f4e1b3c5a7", "3.3"),
    ],
)
def test_each_release_head_selects_its_minor(revision: str, minor: str) -> None:
    contract = contract_for_revision(revision)
    assert contract is not None and contract.minor == minor


@pytest.mark.parametrize("revision", [None, "", "29ce7909c52b", "0badc0ffee00"])  # 3.0.0, a future one
def test_other_revisions_have_no_contract(revision: str | None) -> None:
    assert contract_for_revision(revision) is None


def test_the_supported_range_names_the_oldest_and_newest_supported_release() -> None:
    assert SUPPORTED_RANGE == "Airflow 3.1.0 to 3.3.2"
    assert NEWEST is AIRFLOW_3_3 and CONTRACTS[-1] is NEWEST
    assert SUPPORTED == CONTRACTS == (AIRFLOW_3_1, AIRFLOW_3_2, AIRFLOW_3_3)


def test_the_newest_lacks_nothing_and_passes_rows_through_untouched() -> None:
    rows = [{"run_id": "r", "partition_key": None, "created_at": 1}]
    assert NEWEST.project("dag_run", rows) is rows
    for table in AIRFLOW_TABLES:
        assert NEWEST.table(table.name) is table
        assert NEWEST.columns(table.name) == tuple(c.name for c in table.columns)


def test_an_older_version_drops_the_columns_it_lacks_from_rows_and_tables() -> None:
    rows = [{"run_id": "a", "created_at": 1, "partition_key": None, "partition_date": None}]
    assert AIRFLOW_3_1.project("dag_run", rows) == [{"run_id": "a"}]
    assert AIRFLOW_3_2.project("dag_run", rows) is rows  # 3.2 has them all
    table = AIRFLOW_3_1.table("dag_run")
    assert {"created_at", "partition_key", "partition_date"}.isdisjoint(table.c.keys())
    assert "run_id" in table.c
    assert not AIRFLOW_3_1.has_column("dag", "allowed_run_types")
    assert AIRFLOW_3_2.has_column("dag", "allowed_run_types")
    for contract in (AIRFLOW_3_1, AIRFLOW_3_2):
        assert "retry_reason" not in contract.columns("task_instance")


def test_refusals_follow_each_minor() -> None:
    assert AIRFLOW_3_3.refusals.range_checked_first and AIRFLOW_3_3.refusals.no_schedule is None
    for older in (AIRFLOW_3_1, AIRFLOW_3_2):
        assert not older.refusals.range_checked_first
        assert older.refusals.no_schedule == "{dag_id} has no schedule"
        assert older.refusals.no_runs.format(dag_id="d") == "No runs to create for Dag d"
    assert "per dag." in AIRFLOW_3_1.refusals.already_running
    assert "per Dag." in AIRFLOW_3_2.refusals.already_running
    assert not AIRFLOW_3_1.clear_sets_conf and AIRFLOW_3_2.clear_sets_conf


def test_trace_carriers_and_conf_follow_each_minor() -> None:
    for contract in (AIRFLOW_3_2, AIRFLOW_3_3):
        carrier = contract.run_carrier()
        assert carrier["__type"] == "dict" and carrier["__var"]["traceparent"].startswith("00-")
        assert contract.run_carrier() != carrier  # a fresh one per run
        assert contract.task_carrier(carrier) is carrier
        assert not contract.stores_no_conf_as_empty and contract.refusals.conf_before_runs
    # 3.1: DagRun() starts with {} (extended JSON), insert_mapping writes no carrier.
    assert AIRFLOW_3_1.run_carrier() == {"__var": {}, "__type": "dict"}
    assert AIRFLOW_3_1.task_carrier(AIRFLOW_3_1.run_carrier()) is None
    assert AIRFLOW_3_1.stores_no_conf_as_empty and not AIRFLOW_3_1.refusals.conf_before_runs
    assert AIRFLOW_3_1.conf_rules.conf_keys_first
    assert AIRFLOW_3_1.conf_rules.no_value == "No value passed and Param has no default value"
    assert AIRFLOW_3_2.conf_rules == AIRFLOW_3_3.conf_rules


def test_partitioned_dags_are_refused_by_name_where_their_rules_are_not_reproduced() -> None:
    """3.2 plans partitions by other rules than 3.3 (sidecar/store/_versions.py): refused, named."""
    from types import SimpleNamespace

    from sidecar.engine._model import BackfillSpec
    from sidecar.engine._plans import check_dag
    from sidecar.errors import UnsupportedFeature

    partitioned = {"__type": "airflow.timetables.trigger.CronPartitionTimetable", "__var": {}}
    spec = BackfillSpec(dag_id="p", from_date=None, to_date=None)  # type: ignore[arg-type]
    assert AIRFLOW_3_3.partitions_not_yet is None
    for contract in (AIRFLOW_3_2, AIRFLOW_3_3):
        loaded = SimpleNamespace(
            allowed_run_types=None, airflow=contract, template=SimpleNamespace(timetable=partitioned)
        )
        if contract is AIRFLOW_3_3:
            assert check_dag(spec, loaded) is loaded  # type: ignore[arg-type]
            continue
        with pytest.raises(UnsupportedFeature, match=r"partitioned DAGs on Airflow 3\.2") as refused:
            check_dag(spec, loaded)  # type: ignore[arg-type]
        assert refused.value.field == "backfill.dag_id"
