"""``SidecarSchedulerJobRunner``: Airflow's scheduler, calling the sidecar once per loop."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
from airflow.models.backfill import Backfill
from airflow.utils.session import NEW_SESSION, provide_session
from sqlalchemy import text

from airflow_shim.client import TickClient

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


def _materializing_query(dialect: str) -> str:
    table = "airflow_sidecar.sidecar_backfill" if dialect == "postgresql" else "sidecar_backfill"
    return f"SELECT backfill_id FROM {table} WHERE phase = 'materializing'"


class SidecarSchedulerJobRunner(SchedulerJobRunner):
    """The unmodified scheduler plus two hooks.

    - Each loop, before scheduling, one Tick with a short deadline lets the sidecar top
      up its backfills' windows of runs. Failures are logged; the loop goes on.
    - Airflow's 30 s completion timer skips backfills that the sidecar is still
      materialising, so a windowed backfill is never completed early.
    """

    def __init__(self, *args: object, tick_client: TickClient | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.tick_client = tick_client or TickClient.from_env()

    def _do_scheduling(self, session: Session) -> int:
        # Before Airflow's prohibit_commit guard; the RPC never touches the scheduler's session.
        self.tick_client.tick()
        return super()._do_scheduling(session)

    @provide_session
    def _mark_backfills_complete(self, *, session: Session = NEW_SESSION) -> None:
        held = self._materializing_ids(session)
        super()._mark_backfills_complete(session=session)
        for obj in list(session.dirty):
            if isinstance(obj, Backfill) and obj.id in held:
                obj.completed_at = None

    def _materializing_ids(self, session: Session) -> set[int]:
        try:
            with session.begin_nested():
                dialect = session.get_bind().dialect.name
                return {row[0] for row in session.execute(text(_materializing_query(dialect)))}
        except Exception:
            # No sidecar tables yet (the sidecar never ran): nothing to hold back.
            self.log.debug("sidecar tables not readable", exc_info=True)
            return set()
