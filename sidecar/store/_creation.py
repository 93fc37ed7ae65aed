"""The ledger's creation of a backfill: its two rows, the request-id lookup, Airflow's one-open-backfill rule
(or, for a concurrent backfill, the rule that open backfills of a DAG never overlap).

Part of the ledger (:mod:`sidecar.store._ledger`): the only writer of a new backfill's rows.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.catalog import TaskSelection
from sidecar.errors import BackfillAlreadyRunning
from sidecar.planning import utc_offset_seconds
from sidecar.store._controls import Controls, check_no_overlap
from sidecar.store._phases import Phase
from sidecar.store._tables import backfill, sidecar_backfill, sidecar_task_selection
from sidecar.store._versions import contract_of
from sidecar.vocabulary import Mode, ReprocessBehavior

__all__ = [
    "NewBackfill",
    "RequestRecord",
    "check_no_active_backfill",
    "check_room",
    "find_request",
    "insert_backfill",
]


@dataclass(frozen=True)
class NewBackfill:
    """Everything stored about a backfill when it is created."""

    dag_id: str
    from_date: dt.datetime
    to_date: dt.datetime
    dag_run_conf: dict[str, Any] | None
    reprocess_behavior: ReprocessBehavior
    max_active_runs: int
    triggering_user_name: str | None
    mode: Mode
    run_backwards: bool
    timetable: Mapping[str, Any]
    planned_count: int | None
    """None while a slow-to-count plan is counted in the background."""
    request_id: str | None
    request_fingerprint: str
    now: dt.datetime
    """Creation time, and the plan's cutoff."""
    principal: str = ""
    """Who creates it: its ``request_id`` is unique among this principal's ("" without auth)."""
    dag_version_id: uuid.UUID | None = None
    """The DAG version every run is written on: the latest when the backfill is created."""
    bundle_version: str | None = None
    """The bundle version every new run records (``dag.bundle_version`` at creation)."""
    run_on_latest_version: bool = True
    """Airflow's resolved ``run_on_latest_version``: reprocessed runs move to the pinned version."""
    task_selection: TaskSelection | None = None
    """The task subset asked for (None: every task runs)."""
    selected_task_ids: tuple[str, ...] = ()
    """What ``task_selection`` resolved to."""
    controls: Controls = field(default_factory=Controls)
    """Its controls beyond Airflow's columns (:mod:`sidecar.store._controls`)."""


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """The backfill a ``request_id`` created, and the fingerprint of that request."""

    backfill_id: int
    fingerprint: str | None


async def find_request(conn: AsyncConnection, principal: str, request_id: str) -> RequestRecord | None:
    """The backfill ``principal`` created with ``request_id``, if any (another's ids are not seen)."""
    row = (
        await conn.execute(
            sa.select(sidecar_backfill.c.backfill_id, sidecar_backfill.c.request_fingerprint).where(
                sidecar_backfill.c.principal == principal, sidecar_backfill.c.request_id == request_id
            )
        )
    ).one_or_none()
    return None if row is None else RequestRecord(row.backfill_id, row.request_fingerprint)


async def check_no_active_backfill(conn: AsyncConnection, dag_id: str) -> None:
    """Airflow's rule: one open backfill per DAG.

    Raises:
        BackfillAlreadyRunning: field ``backfill.dag_id``.
    """
    active = await conn.scalar(
        sa.select(sa.func.count())
        .select_from(backfill)
        .where(backfill.c.dag_id == dag_id, backfill.c.completed_at.is_(None))
    )
    if active:
        raise BackfillAlreadyRunning(
            contract_of(conn).refusals.already_running.format(dag_id=dag_id), field="backfill.dag_id"
        )


async def check_room(
    conn: AsyncConnection, dag_id: str, from_date: dt.datetime, to_date: dt.datetime, *, concurrent: bool
) -> None:
    """Whether a new backfill of ``dag_id`` may open: Airflow's rule, or (``concurrent``) no overlap.

    Raises:
        BackfillAlreadyRunning: not concurrent, and another backfill of the DAG is open.
        BackfillRangeOverlaps: concurrent, and an open backfill's range overlaps this one's.
    """
    if concurrent:
        await check_no_overlap(conn, dag_id, from_date, to_date)
    else:
        await check_no_active_backfill(conn, dag_id)


async def _lock_dag(conn: AsyncConnection, dag_id: str) -> None:
    """Serialise creations for one DAG until the transaction ends, so that its checks cannot race.

    PostgreSQL: a transaction-level advisory lock per DAG. SQLite: a write that changes
    nothing takes the database's write lock before the checks read (a deferred
    transaction would otherwise read first, and two creations could both see room).
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"airflow_sidecar.create:{dag_id}"}
        )
    else:
        await conn.execute(
            sidecar_backfill.update().where(sa.false()).values(dag_id=sidecar_backfill.c.dag_id)
        )


async def insert_backfill(conn: AsyncConnection, new: NewBackfill) -> int | None:
    """Insert the ``backfill`` and ``sidecar_backfill`` rows; None if the principal's ``request_id`` is taken.

    Safe to retry: the request-id and one-active-backfill (or no-overlap) checks run in the
    same transaction, under a per-DAG lock (:func:`_lock_dag`).

    Raises:
        BackfillAlreadyRunning: another backfill of the DAG is open.
        BackfillRangeOverlaps: a concurrent backfill overlaps an open one.
    """
    await _lock_dag(conn, new.dag_id)  # serialise creations for one DAG, then check again
    if new.request_id and await find_request(conn, new.principal, new.request_id):
        return None
    await check_room(conn, new.dag_id, new.from_date, new.to_date, concurrent=new.controls.concurrent)
    conf = new.dag_run_conf
    if conf is None and contract_of(conn).stores_no_conf_as_empty:
        conf = {}
    backfill_id = (
        await conn.execute(
            backfill.insert().returning(backfill.c.id),
            {
                "dag_id": new.dag_id,
                "from_date": new.from_date,
                "to_date": new.to_date,
                "dag_run_conf": conf,
                "is_paused": False,
                "reprocess_behavior": new.reprocess_behavior.value,
                "max_active_runs": new.max_active_runs,
                "created_at": new.now,
                "updated_at": new.now,
                "triggering_user_name": new.triggering_user_name,
            },
        )
    ).scalar_one()
    await conn.execute(
        sidecar_backfill.insert(),
        {
            "backfill_id": backfill_id,
            "dag_id": new.dag_id,
            "phase": Phase.MATERIALIZING.value,
            "mode": new.mode.value,
            "run_backwards": new.run_backwards,
            "cutoff": new.now,
            "timetable": new.timetable,
            "dag_run_conf_given": new.dag_run_conf is not None,
            "planned_count": new.planned_count,
            "written_count": 0,
            "skipped_count": 0,
            "cursor": None,
            "request_id": new.request_id or None,
            "principal": new.principal,
            "request_fingerprint": new.request_fingerprint,
            "dag_version_id": new.dag_version_id,
            "bundle_version": new.bundle_version,
            "run_on_latest_version": new.run_on_latest_version,
            **new.controls.columns(),
            "from_utc_offset": utc_offset_seconds(new.from_date) or None,
            "to_utc_offset": utc_offset_seconds(new.to_date) or None,
            "created_at": new.now,
            "updated_at": new.now,
        },
    )
    if new.task_selection is not None:
        await conn.execute(
            sidecar_task_selection.insert(),
            {
                "backfill_id": backfill_id,
                "task_regex": new.task_selection.task_regex,
                "task_ids": list(new.task_selection.task_ids),
                "include_upstream": new.task_selection.include_upstream,
                "include_downstream": new.task_selection.include_downstream,
                "selected_task_ids": list(new.selected_task_ids),
            },
        )
    return int(backfill_id)
