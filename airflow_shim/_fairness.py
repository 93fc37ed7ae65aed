"""Fair shares for backfill runs inside Airflow 3.3.2's scheduler loop.

Airflow examines at most ``max_dagruns_per_loop_to_schedule`` running runs per loop and
orders backfill runs last, so once that many regular runs are running a backfill's
running runs are never examined again (apache/airflow#58554); its queued runs are
ordered last too. These queries pick the backfill runs Airflow left out, round robin
across backfills (oldest backfill first, plan order within one), locked the way Airflow
locks the runs it examines (``FOR UPDATE SKIP LOCKED``), and bounded by a global cap on
running backfill runs so that backfills never crowd out scheduled runs.

When an open backfill has a priority or a cap across its DAG's backfills (the sidecar's
controls, docs/controls.md), the shim chooses every queued backfill run that starts
(:func:`prioritized_backfill_runs`): higher priority first, each backfill within its
``max_active_runs``, each DAG within its cap.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from airflow.models.backfill import Backfill, BackfillDagRun
from airflow.models.dag import DagModel
from airflow.models.dagrun import DagRun
from airflow.utils.sqlalchemy import with_row_locks
from airflow.utils.state import DagRunState
from sqlalchemy import and_, column, false, func, inspect, or_, select, table, text

from sidecar.names import SIDECAR_SCHEMA

if TYPE_CHECKING:
    from sqlalchemy import Select
    from sqlalchemy.orm import Session
    from sqlalchemy.sql.expression import TableClause


#: Serialises the cap check between schedulers (pg_advisory_xact_lock key: "sidecar cap").
_CAP_LOCK_KEY = 0x51DECA9


def count_running_backfill_runs(session: Session) -> int:
    """Backfill runs in the running state, across all backfills.

    On PostgreSQL it first takes a transaction-level advisory lock, held until the
    scheduler commits the runs it starts: two schedulers never both see room for the
    same last slot under the cap.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CAP_LOCK_KEY})
    return int(
        session.scalar(
            select(func.count(DagRun.id)).where(
                DagRun.state == DagRunState.RUNNING, DagRun.backfill_id.is_not(None)
            )
        )
        or 0
    )


def _ranked(state: DagRunState, seen: Collection[int], *columns: Any) -> Select[Any]:
    """Backfill runs in ``state`` that may start or run (not in ``seen``), each with its turn in its backfill.

    ``turn`` numbers a backfill's runs in plan order; ``columns`` are added to the select.
    Only runs of unpaused backfills of unpaused, live DAGs whose ``run_after`` has come.

    Cost: every run in ``state`` is read and numbered. For ``running`` that is what is in
    flight (Airflow's partial index ``idx_dag_run_running_dags``, then one probe of
    ``backfill_dag_run``'s unique index per run). For ``queued`` it is the whole backlog of
    queued backfill runs: plan order (``sort_ordinal``) is a column of ``backfill_dag_run``
    and the state one of ``dag_run``, so no index walks one backfill's queued runs in plan
    order and stops after the first few; a top-k per backfill would read them all the same.
    Hence :func:`backfill_runs_left_out` is only asked about queued runs when Airflow's
    window filled with regular runs, and :func:`prioritized_backfill_runs` only while an open
    backfill has a priority or a DAG cap (``SidecarSchedulerJobRunner._fair_queued_runs``).
    """
    ranked = (
        select(
            DagRun.id.label("id"),
            func.row_number()
            .over(partition_by=DagRun.backfill_id, order_by=BackfillDagRun.sort_ordinal)
            .label("turn"),
            DagRun.backfill_id.label("backfill_id"),
            *columns,
        )
        # Both columns, as Airflow's own queued-run query joins them: a run a later backfill
        # reprocessed is still linked from the earlier backfill's row, and on ``dag_run_id``
        # alone the unique index (backfill_id, dag_run_id) is read whole for every run.
        .join(
            BackfillDagRun,
            and_(BackfillDagRun.backfill_id == DagRun.backfill_id, BackfillDagRun.dag_run_id == DagRun.id),
        )
        .join(Backfill, Backfill.id == DagRun.backfill_id)
        .join(DagModel, DagModel.dag_id == DagRun.dag_id)
        .where(
            DagRun.state == state,
            DagRun.run_after <= func.now(),
            DagModel.is_paused == false(),
            DagModel.is_stale == false(),
            Backfill.is_paused == false(),
        )
    )
    return ranked.where(DagRun.id.not_in(list(seen))) if seen else ranked


def backfill_runs_left_out(
    session: Session, state: DagRunState, seen: Collection[int], limit: int
) -> list[DagRun]:
    """Up to ``limit`` backfill runs in ``state`` that are not in ``seen``, fairly ordered and row-locked.

    Round robin across backfills: every backfill's first run (in plan order) comes
    before any backfill's second, and among equals the oldest backfill goes first.
    """
    if limit <= 0:
        return []
    sub = _ranked(state, seen).subquery()
    query = (
        select(DagRun).join(sub, sub.c.id == DagRun.id).order_by(sub.c.turn, sub.c.backfill_id).limit(limit)
    )
    return list(session.scalars(with_row_locks(query, of=DagRun, session=session, skip_locked=True)))


# Where the sidecar keeps a backfill's controls: ``sidecar_backfill`` in the schema
# ``sidecar.names.SIDECAR_SCHEMA`` (on SQLite, no schema). The shim reads the two columns it
# needs without importing the sidecar's store.
#: The sidecar phases of a backfill whose runs may still start (``sidecar.store.TICKED``).
_OPEN_PHASES = ("materializing", "set_aside", "materialized")


def _controls_table(session: Session) -> TableClause:
    schema = SIDECAR_SCHEMA if session.get_bind().dialect.name == "postgresql" else None
    return table(
        "sidecar_backfill",
        column("backfill_id"),
        column("phase"),
        column("priority"),
        column("dag_max_active_runs"),
        schema=schema,
    )


class BackfillControls:
    """Whether the sidecar's table holds backfill controls the shim honours (priority, a DAG's cap).

    The table is looked for once (on a connection of its own: a failed statement inside the
    scheduler's transaction would abort it) and again every ``recheck`` calls while it is
    missing, e.g. before the sidecar first migrated its tables or on an older sidecar.
    """

    def __init__(self, recheck: int = 100) -> None:
        self.recheck = recheck
        self._present = False
        self._calls = 0

    def present(self, session: Session) -> bool:
        """Whether the sidecar's table with the control columns exists."""
        if self._present:
            return True
        self._calls += 1
        if self._calls % self.recheck != 1:
            return False
        sidecar_table = _controls_table(session)
        try:
            columns = inspect(session.get_bind()).get_columns(sidecar_table.name, schema=sidecar_table.schema)
        except Exception:  # no such table (yet)
            return False
        self._present = {"priority", "dag_max_active_runs"} <= {c["name"] for c in columns}
        return self._present

    def in_use(self, session: Session) -> bool:
        """Whether an open backfill has a priority or a DAG cap (else Airflow's own pick is kept)."""
        if not self.present(session):
            return False
        t = _controls_table(session)
        used = (
            select(t.c.backfill_id)
            .where(
                t.c.phase.in_(_OPEN_PHASES),
                or_(func.coalesce(t.c.priority, 0) != 0, t.c.dag_max_active_runs.is_not(None)),
            )
            .exists()
        )
        return bool(session.scalar(select(used)))


def prioritized_backfill_runs(session: Session, seen: Collection[int], limit: int) -> list[DagRun]:
    """Up to ``limit`` queued backfill runs to start, by priority, within every budget, row-locked.

    Higher ``priority`` first; among equals round robin across backfills (oldest first, plan
    order within one), as :func:`backfill_runs_left_out`. A backfill offers no more runs than
    its ``max_active_runs`` leaves room for, and a backfill with a ``dag_max_active_runs``
    offers none once that many backfill runs of its DAG are running or chosen here.
    """
    if limit <= 0:
        return []
    t = _controls_table(session)
    running = (
        select(DagRun.backfill_id.label("backfill_id"), func.count(DagRun.id).label("n"))
        .where(DagRun.state == DagRunState.RUNNING, DagRun.backfill_id.is_not(None))
        .group_by(DagRun.backfill_id)
        .subquery()
    )
    sub = (
        _ranked(
            DagRunState.QUEUED,
            seen,
            func.coalesce(t.c.priority, 0).label("priority"),
            (Backfill.max_active_runs - func.coalesce(running.c.n, 0)).label("room"),
            t.c.dag_max_active_runs.label("dag_cap"),
        )
        .outerjoin(t, t.c.backfill_id == DagRun.backfill_id)
        .outerjoin(running, running.c.backfill_id == DagRun.backfill_id)
        .subquery()
    )
    # Room for those a DAG's cap drops: the chosen runs are at most ``limit``.
    query = (
        select(DagRun, sub.c.dag_cap)
        .join(sub, sub.c.id == DagRun.id)
        .where(sub.c.turn <= sub.c.room)
        .order_by(sub.c.priority.desc(), sub.c.turn, sub.c.backfill_id)
        .limit(min(limit * 4, limit + 200))
    )
    candidates = list(session.execute(with_row_locks(query, of=DagRun, session=session, skip_locked=True)))
    capped = {run.dag_id for run, cap in candidates if cap is not None}
    dag_running = _running_backfill_runs_per_dag(session, capped) if capped else {}
    chosen: list[DagRun] = []
    for run, cap in candidates:
        if len(chosen) >= limit:
            break
        if cap is not None and dag_running.get(run.dag_id, 0) >= cap:
            continue
        # Runs chosen here will be running: they count against every cap of their DAG.
        dag_running[run.dag_id] = dag_running.get(run.dag_id, 0) + 1
        chosen.append(run)
    return chosen


def _running_backfill_runs_per_dag(session: Session, dag_ids: Collection[str]) -> dict[str, int]:
    rows = session.execute(
        select(DagRun.dag_id, func.count(DagRun.id))
        .where(
            DagRun.state == DagRunState.RUNNING,
            DagRun.backfill_id.is_not(None),
            DagRun.dag_id.in_(list(dag_ids)),
        )
        .group_by(DagRun.dag_id)
    )
    return {dag_id: int(n) for dag_id, n in rows}
