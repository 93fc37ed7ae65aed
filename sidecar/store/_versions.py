"""Which Airflow versions the sidecar writes for, and how their rows differ: one row contract each.

Supported: 3.1, 3.2 and 3.3 (every patch: 3.1.0-3.1.8, 3.2.0-3.2.2, 3.3.0-3.3.2). A known
minor whose rows the sidecar cannot reproduce yet would carry a ``not_yet`` reason and be
refused at start-up by name; any other revision (a newer Airflow) is refused as unknown.

Every difference between the supported Airflow minors that the sidecar's rows or refusals
depend on is a field of :class:`AirflowRowContract`, one frozen instance per minor, looked up
by the alembic revision of the metadata database at start-up (:func:`contract_for_revision`).
Code that writes rows asks the contract (``contract.columns(table)``,
``contract.project(table, rows)``), never the version number: a new minor is a new
instance here, not ``if version`` branches elsewhere.

The differences, from the sources and migrations of apache-airflow-core 3.1.8, 3.2.2, 3.3.2:

- 3.1 has no ``dag_run.created_at``, ``dag_run.partition_key``/``partition_date``,
  ``backfill_dag_run.partition_key`` (3.2 migrations 0095, 0106) nor ``dag.allowed_run_types``
  (0105: 3.1 has no per-DAG run-type restriction, so no "does not allow backfill runs").
- 3.1 and 3.2 have no ``task_instance.retry_delay_override``/``retry_reason`` (3.3's 0113),
  on ``task_instance_history`` either.
- Run ids are ``backfill__<logical date ISO>`` on all three (``DagRun.generate_run_id``).
- Refusals (:class:`Refusals`): 3.3 checks the range (from after to, future dates) first and
  refuses a non-periodic schedule and an empty range by name; 3.1 and 3.2 check future dates
  after ``depends_on_past``, have no from-after-to check (the range is then empty), refuse only
  ``schedule=None`` ("x has no schedule") and word an empty range without it ("No runs to
  create for Dag x"; 3.1 even creates the empty backfill, which the sidecar refuses). 3.1 says
  "dag"/"DAG" where the others say "Dag".
- 3.1 does not give a reprocessed run the backfill's conf (``_handle_clear_run``).
- 3.1 writes no trace context: ``DagRun()`` starts with an empty carrier (``{}``, in extended
  JSON ``{"__var": {}, "__type": "dict"}``), ``insert_mapping`` gives task instances none, and
  ``clear_task_instances`` leaves both alone (``trace_carriers``).
- 3.1 stores ``backfill.dag_run_conf`` ``{}`` when no conf is given (``JSONField`` with the
  column default; 3.2+ ``sa.JSON``: null).
- 3.1 checks the conf in ``create_dagrun``, as each run is created, with
  ``ParamsDict.update`` then ``validate`` (the conf's keys first, "No value passed and Param
  has no default value"); the sidecar checks it before writing anything, after the
  empty-range refusal (:class:`~sidecar.catalog.ConfRules`, ``Refusals.conf_before_runs``).
  Where 3.1 commits a backfill and then fails on the conf, the sidecar writes nothing.
- Partitioned DAGs (``CronPartitionTimetable``, new in 3.2): 3.3 walks the partition axis
  with the bounds' wall clock read in the timetable's zone, ``run_after`` = partition date =
  the tick, keys formatted in that zone, existing runs found by ``partition_date``. 3.2 steps
  ``next_dagrun_info_v2`` on the bounds as UTC instants, applies ``run_offset`` to the
  partition date, formats keys in UTC and finds existing runs by ``partition_key``: not
  reproduced yet, so refused by name (``partitions_not_yet``).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.catalog import ConfRules
from sidecar.store._tables import AIRFLOW_TABLES

#: A trace carrier, as a value or serialised.
_Carrier = TypeVar("_Carrier")

#: The execution option (on the engine, so on every connection) carrying the live contract.
CONTRACT_OPTION = "sidecar_airflow_contract"

_TABLES: dict[str, sa.Table] = {t.name: t for t in AIRFLOW_TABLES}


@dataclass(frozen=True)
class Refusals:
    """How one minor orders and words the refusals that differ between minors (``_create_backfill``)."""

    range_checked_first: bool = True
    """3.3: from-after-to and future dates before anything else; older: future dates after
    ``depends_on_past``, and no from-after-to check (an empty range is refused instead)."""
    no_schedule: str | None = None
    """Older minors refuse ``schedule=None`` alone, with this text (``{dag_id}``); None: 3.3's
    non-periodic refusal, for every non-periodic schedule."""
    no_runs: str = "No runs to create for Dag {dag_id} in the range [{from_date}, {to_date}]"
    reverse_depends_on_past: str = (
        "Backfill cannot be run in reverse when the Dag has tasks where depends_on_past=True."
    )
    reprocess_depends_on_past: str = (
        "Dag has tasks for which depends_on_past=True. "
        "You must set reprocess behavior to reprocess completed or reprocess failed."
    )
    already_running: str = (
        "Another backfill is running for Dag {dag_id}. There can be only one running backfill per Dag."
    )
    conf_before_runs: bool = True
    """3.2+ check the conf with the other parameters; 3.1's ``create_dagrun`` checks it as it
    creates the first run, so an empty range is refused before a bad conf."""


@dataclass(frozen=True, eq=False)  # one instance per minor: compared (and cached) by identity
class AirflowRowContract:
    """What one Airflow minor's ``_create_backfill`` writes and says, as far as the sidecar differs by it."""

    minor: str
    """``"3.3"``: the minor this contract describes."""
    patches: str
    """The releases it covers, e.g. ``"3.3.0-3.3.2"`` (README, refusal lines)."""
    revisions: frozenset[str]
    """The alembic heads of those releases (``airflow.utils.db._REVISION_HEADS_MAP``)."""
    absent_columns: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """Per Airflow table, the columns the newest schema has and this version lacks."""
    refusals: Refusals = field(default_factory=Refusals)
    """The version's order and wording of the refusals that differ."""
    clear_sets_conf: bool = True
    """Whether reprocessing a run gives it the backfill's conf (``_handle_clear_run``; not on 3.1)."""
    conf_rules: ConfRules = field(default_factory=ConfRules)
    """How the version checks a conf against the DAG's params (order and words)."""
    stores_no_conf_as_empty: bool = False
    """3.1 stores ``backfill.dag_run_conf`` ``{}`` when no conf is given (its column's default);
    3.2+ store JSON null. Runs get ``{}`` on every version."""
    trace_carriers: bool = True
    """3.2+: a new run gets a fresh W3C trace carrier, its task instances the run's, and
    clearing renews both. 3.1 writes an empty carrier on the run (``{}``), none on its task
    instances, and clearing leaves them as they are."""
    resolves_run_on_latest_version: bool = True
    """Whether an unset ``run_on_latest_version`` follows the DAG's ``rerun_with_latest_version``
    and ``[core] rerun_with_latest_version`` before the fallback True (3.3's
    ``resolve_run_on_latest_version``); older minors' API and CLI default to True."""
    versionless_follow_run: bool = True
    """Whether a clear not on the latest version still moves a run without a DAG version to the
    latest and a task instance without one to its run's (3.3's ``clear_task_instances``)."""
    not_yet: str | None = None
    """Why the sidecar cannot write this version's rows exactly yet (start-up refuses it), or None."""
    partitions_not_yet: str | None = None
    """Why this version's backfills of partitioned DAGs are not reproduced (each is refused
    by name, FAILED_PRECONDITION), or None: they are planned and written as 3.3 does."""

    def run_carrier(self) -> dict[str, Any]:
        """The ``dag_run.context_carrier`` of a new run (Airflow's extended JSON)."""
        if not self.trace_carriers:
            return {"__var": {}, "__type": "dict"}
        ids = secrets.token_hex(24)  # one draw: the 16-byte trace id, then the 8-byte span id
        traceparent = f"00-{ids[:32]}-{ids[32:]}-00"
        return {"__var": {"traceparent": traceparent}, "__type": "dict"}

    def task_carrier(self, run_carrier: _Carrier) -> _Carrier | None:
        """The ``task_instance.context_carrier`` of a new task instance of a run with ``run_carrier``
        (in the form given: the value, or its serialised JSON)."""
        return run_carrier if self.trace_carriers else None

    def columns(self, table: str) -> tuple[str, ...]:
        """The columns of ``table`` (as the sidecar declares it) that exist in this version."""
        return _columns(self, table)

    def has_column(self, table: str, column: str) -> bool:
        """Whether ``table.column`` exists in this version's schema."""
        return column not in self.absent_columns.get(table, frozenset())

    def table(self, table: str) -> sa.Table:
        """The sidecar's declaration of ``table`` without the columns this version lacks."""
        return _table(self, table)

    def project(self, table: str, rows: Sequence[Mapping[str, Any]]) -> Sequence[Mapping[str, Any]]:
        """``rows`` (built for the newest schema) with only the columns this version has.

        The rows are returned as they are when the version lacks none of their columns.
        """
        absent = self.absent_columns.get(table)
        if not absent or not rows or absent.isdisjoint(rows[0]):
            return rows
        return [{k: v for k, v in row.items() if k not in absent} for row in rows]


@cache
def _columns(contract: AirflowRowContract, table: str) -> tuple[str, ...]:
    return tuple(c.name for c in _TABLES[table].columns if contract.has_column(table, c.name))


@cache
def _table(contract: AirflowRowContract, table: str) -> sa.Table:
    full = _TABLES[table]
    if not contract.absent_columns.get(table):
        return full
    return sa.Table(
        full.name,
        sa.MetaData(),
        *(c._copy() for c in full.columns if contract.has_column(table, c.name)),
    )


_RETRY_POLICY = frozenset({"retry_delay_override", "retry_reason"})

AIRFLOW_3_1 = AirflowRowContract(
    minor="3.1",
    resolves_run_on_latest_version=False,
    versionless_follow_run=False,
    patches="3.1.0-3.1.8",
    # 3.1.0 to 3.1.7, then 3.1.8 (two 3.1.8 migrations: an index and a column type).
    revisions=frozenset({"cc92b33c6709", "509b94a1042d"}),
    absent_columns={
        "dag": frozenset({"allowed_run_types"}),
        "dag_run": frozenset({"created_at", "partition_key", "partition_date"}),
        "backfill_dag_run": frozenset({"partition_key"}),
        "task_instance": _RETRY_POLICY,
    },
    refusals=Refusals(
        range_checked_first=False,
        no_schedule="{dag_id} has no schedule",
        no_runs="No runs to create for Dag {dag_id}",  # 3.2's words: 3.1 creates the empty backfill
        reverse_depends_on_past=(
            "Backfill cannot be run in reverse when the DAG has tasks where depends_on_past=True."
        ),
        reprocess_depends_on_past=(
            "DAG has tasks for which depends_on_past=True. "
            "You must set reprocess behavior to reprocess completed or reprocess failed."
        ),
        already_running=(
            "Another backfill is running for dag {dag_id}. There can be only one running backfill per dag."
        ),
        conf_before_runs=False,
    ),
    clear_sets_conf=False,
    conf_rules=ConfRules(conf_keys_first=True, no_value="No value passed and Param has no default value"),
    stores_no_conf_as_empty=True,
    trace_carriers=False,
)
AIRFLOW_3_2 = AirflowRowContract(
    minor="3.2",
    resolves_run_on_latest_version=False,
    versionless_follow_run=False,
    patches="3.2.0-3.2.2",
    revisions=frozenset({"1d6611b6ab7c"}),
    absent_columns={"task_instance": _RETRY_POLICY},
    refusals=Refusals(
        range_checked_first=False,
        no_schedule="{dag_id} has no schedule",
        no_runs="No runs to create for Dag {dag_id}",
    ),
    partitions_not_yet=(
        "backfills of partitioned DAGs on Airflow 3.2 (its partition bounds as UTC instants, "
        "run_offset on partition dates, keys in UTC, partitions found by key) are not supported"
    ),
)
AIRFLOW_3_3 = AirflowRowContract(minor="3.3", patches="3.3.0-3.3.2", revisions=frozenset({"d2f4e1b3c5a7"}))

#: Oldest first; the last is the newest, which the sidecar assumes when no database said otherwise.
CONTRACTS = (AIRFLOW_3_1, AIRFLOW_3_2, AIRFLOW_3_3)
NEWEST = CONTRACTS[-1]
#: The contracts whose versions the sidecar writes for (the others are refused at start-up).
SUPPORTED = tuple(c for c in CONTRACTS if c.not_yet is None)
#: The supported releases, for refusal lines and the README.
SUPPORTED_RANGE = f"Airflow {SUPPORTED[0].patches.split('-')[0]} to {NEWEST.patches.split('-')[1]}"


def contract_for_revision(revision: str | None) -> AirflowRowContract | None:
    """The contract of the Airflow release whose alembic head is ``revision``, or None.

    A known but not yet supported version has a contract too (its ``not_yet`` says why).
    """
    for contract in CONTRACTS:
        if revision in contract.revisions:
            return contract
    return None


def contract_of(conn: AsyncConnection | sa.Connection) -> AirflowRowContract:
    """The contract of the database ``conn`` is on (set by ``prepare``; the newest otherwise)."""
    options = (conn.sync_engine if isinstance(conn, AsyncConnection) else conn).get_execution_options()
    contract = options.get(CONTRACT_OPTION)
    return contract if isinstance(contract, AirflowRowContract) else NEWEST
