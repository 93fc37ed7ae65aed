"""Which Airflow versions the sidecar writes for, and how their rows differ: one row contract each.

Supported: 3.2 and 3.3. 3.1 is known (its contract records what differs) but refused at
start-up by name until its remaining differences (``not_yet``) are reproduced.

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
- Partitioned DAGs (``CronPartitionTimetable``, new in 3.2): 3.3 walks the partition axis
  with the bounds' wall clock read in the timetable's zone, ``run_after`` = partition date =
  the tick, keys formatted in that zone, existing runs found by ``partition_date``. 3.2 steps
  ``next_dagrun_info_v2`` on the bounds as UTC instants, applies ``run_offset`` to the
  partition date, formats keys in UTC and finds existing runs by ``partition_key``: not
  reproduced yet, so refused by name (``partitions_not_yet``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.store._tables import AIRFLOW_TABLES

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
    not_yet: str | None = None
    """Why the sidecar cannot write this version's rows exactly yet (start-up refuses it), or None."""
    partitions_not_yet: str | None = None
    """Why this version's backfills of partitioned DAGs are not reproduced (each is refused
    by name, FAILED_PRECONDITION), or None: they are planned and written as 3.3 does."""

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
    ),
    clear_sets_conf=False,
    # What the parity suite shows on 3.1.8 (docs/support-matrix.md), still to reproduce:
    not_yet=(
        "its rows differ in ways the sidecar does not reproduce yet (empty trace carriers on "
        "dag_run and none on task_instance, backfill.dag_run_conf {} when no conf is given, conf "
        "checked by create_dagrun, relativedelta schedules serialized differently) and the shim "
        "does not run its scheduler"
    ),
)
AIRFLOW_3_2 = AirflowRowContract(
    minor="3.2",
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
