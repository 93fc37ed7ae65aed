"""``SidecarSchedulerJobRunner``: Airflow's scheduler, calling the sidecar once per loop."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Collection, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
from airflow.models.backfill import Backfill
from airflow.models.dagrun import DagRun
from airflow.utils.session import NEW_SESSION, provide_session
from airflow.utils.state import DagRunState

from airflow_shim._completion import CompletionHold
from airflow_shim._fairness import (
    BackfillControls,
    backfill_runs_left_out,
    count_running_backfill_runs,
    prioritized_backfill_runs,
)
from airflow_shim.client import TickClient, _security_from_env
from sidecar.config import ShimSettings, shim_auth_mode

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


class LoopStats:
    """Times of the scheduler's own loop (``_do_scheduling``) and of the Tick inside it.

    Logged as one line every ``SIDECAR_SHIM_STATS_INTERVAL`` seconds (default 60), so an
    operator (and the resilience tests) can see what the sidecar costs the scheduler.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._since = time.monotonic()
        self.loops: list[float] = []
        self.ticks: list[float] = []

    def add(self, loop: float, tick: float) -> str | None:
        """Record one loop; return the summary line when one is due."""
        self.loops.append(loop)
        self.ticks.append(tick)
        now = time.monotonic()
        if now - self._since < self.interval:
            return None
        line = (
            f"sidecar shim loop stats: loops={len(self.loops)} "
            f"loop_max_ms={max(self.loops) * 1000:.1f} loop_mean_ms={sum(self.loops) / len(self.loops) * 1000:.1f} "
            f"tick_max_ms={max(self.ticks) * 1000:.1f} tick_mean_ms={sum(self.ticks) / len(self.ticks) * 1000:.1f}"
        )
        self._since, self.loops, self.ticks = now, [], []
        return line


class _QueuedRuns(list[DagRun]):
    """The fair pick of queued runs: a list that also answers ``.all()``, since 3.1's
    scheduler calls it on the query ``get_queued_dag_runs_to_set_running`` returns there."""

    def all(self) -> list[DagRun]:
        return list(self)


class SidecarSchedulerJobRunner(SchedulerJobRunner):
    """The unmodified scheduler plus four hooks.

    - Each loop, before scheduling, one Tick with a short deadline lets the sidecar top
      up its backfills' windows of runs. Failures are logged; the loop goes on.
    - Airflow's 30 s completion timer skips the backfills the last Tick said the sidecar
      is still materialising (and those created since), so a windowed backfill is never
      completed early; with no Tick answered recently it completes none (backfills wait).
    - Running backfill runs that Airflow's per-loop limit left out are examined too
      (apache/airflow#58554), fairly across backfills.
    - Queued backfill runs Airflow left out are offered for starting, fairly, unless
      ``SIDECAR_MAX_RUNNING_BACKFILL_RUNS`` backfill runs are already running; at the cap
      no backfill run is started, so backfills never crowd out scheduled runs. While an open
      backfill has a priority or a DAG cap (docs/controls.md), the shim chooses every
      backfill run that starts: by priority, within each backfill's and each DAG's cap.

    ``SIDECAR_SHIM_FAIRNESS=off`` turns the last two off (Airflow's own choice of runs).
    """

    def __init__(
        self,
        *args: object,
        tick_client: TickClient | None = None,
        completion_hold: CompletionHold | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.tick_client = tick_client or TickClient.from_env()
        self.completion_hold = completion_hold or CompletionHold()
        settings = ShimSettings.from_env()
        self.loop_stats = LoopStats(settings.stats_interval)
        self.backfill_cap = settings.max_running_backfill_runs
        self.fair = settings.fairness
        self.controls = BackfillControls()
        self._first_tick_logged = False
        # One line that confirms the set-up (the token itself is never logged).
        self.log.info(
            "sidecar shim: ticking %s with %s, deadline %.2fs",
            self.tick_client.target,
            shim_auth_mode(_security_from_env()),
            self.tick_client.deadline,
        )

    def _do_scheduling(self, session: Session) -> int:
        # Before Airflow's prohibit_commit guard; the RPC never touches the scheduler's session.
        started = time.monotonic()
        self._tick()
        ticked = time.monotonic()
        try:
            return super()._do_scheduling(session)
        finally:
            done = time.monotonic()
            line = self.loop_stats.add(done - started, ticked - started)
            if line:
                self.log.info(line)

    def _tick(self) -> None:
        """One Tick; its answer (if any) says which backfills the sidecar is still writing."""
        sent_at = self.completion_hold.sending()
        response = self.tick_client.tick()
        if response is not None:
            self.completion_hold.answered(response.materializing_backfill_ids, sent_at)
            if not self._first_tick_logged:
                self._first_tick_logged = True
                self.log.info(
                    "sidecar shim: first Tick answered by %s (%d runs written, %d backfills materializing)",
                    self.tick_client.target,
                    response.runs_written,
                    len(response.materializing_backfill_ids),
                )

    def _schedule_all_dag_runs(self, guard: Any, dag_runs: Iterable[DagRun], session: Session) -> Any:
        runs = list(dag_runs)
        if not self.fair:
            return super()._schedule_all_dag_runs(guard, runs, session)
        # No savepoint here: Airflow's prohibit_commit guard counts releasing one as a commit.
        try:
            extra = backfill_runs_left_out(
                session, DagRunState.RUNNING, {r.id for r in runs}, DagRun.DEFAULT_DAGRUNS_TO_EXAMINE
            )
            stamp = getattr(self, "_stamp_team_names", None)  # 3.3's multi-team; 3.1 and 3.2 have none
            if stamp is not None:
                stamp(extra, session)  # as Airflow does for its own pick
        except Exception:
            self.log.exception("sidecar shim: could not pick left-out backfill runs; Airflow's own pick only")
            extra = []
        return super()._schedule_all_dag_runs(guard, runs + extra, session)

    def _start_queued_dagruns(self, session: Session) -> None:
        if not self.fair:
            super()._start_queued_dagruns(session)
            return
        with self._fair_queued_runs(session):
            super()._start_queued_dagruns(session)

    @contextlib.contextmanager
    def _fair_queued_runs(self, session: Session) -> Iterator[None]:
        """Swap Airflow's queued-run query, for this call only, for one that is fair to backfills."""
        original = DagRun.__dict__["get_queued_dag_runs_to_set_running"]
        cap = self.backfill_cap
        controls = self.controls

        log = self.log

        def fair(cls: type[DagRun], session: Session) -> Collection[DagRun]:
            return _QueuedRuns(pick(cls, session))

        def pick(cls: type[DagRun], session: Session) -> list[DagRun]:
            runs = list(original.__func__(cls, session))
            # No savepoint here: Airflow's prohibit_commit guard counts releasing one as a commit.
            try:
                room = None if cap is None else cap - count_running_backfill_runs(session)
                if room is not None and room <= 0:
                    return [r for r in runs if r.backfill_id is None]
                if controls.in_use(session):
                    # Priorities or a DAG's cap: the shim chooses every backfill run that starts.
                    kept = [r for r in runs if r.backfill_id is None]
                    limit = DagRun.DEFAULT_DAGRUNS_TO_EXAMINE if room is None else room
                    return kept + prioritized_backfill_runs(session, {r.id for r in kept}, limit)
                extra: list[DagRun] = []
                # Backfill runs were left out only if Airflow's window filled up with regular
                # runs (it orders backfill runs last, and by plan order among themselves).
                # Otherwise ranking every queued backfill run is pure cost: 0.6 s a loop with
                # 100,000 queued (bench/d_scheduler_loop.py).
                if len(runs) >= DagRun.DEFAULT_DAGRUNS_TO_EXAMINE and all(
                    r.backfill_id is None for r in runs
                ):
                    seen = {r.id for r in runs}
                    limit = DagRun.DEFAULT_DAGRUNS_TO_EXAMINE if room is None else room
                    extra = backfill_runs_left_out(session, DagRunState.QUEUED, seen, limit)
            except Exception:
                log.exception("sidecar shim: could not pick left-out backfill runs; Airflow's own pick only")
                return runs
            kept = [r for r in runs if r.backfill_id is None]
            backfill_runs = [r for r in runs if r.backfill_id is not None] + extra
            return kept + (backfill_runs if room is None else backfill_runs[:room])

        setattr(DagRun, "get_queued_dag_runs_to_set_running", classmethod(fair))  # noqa: B010
        try:
            yield
        finally:
            setattr(DagRun, "get_queued_dag_runs_to_set_running", original)  # noqa: B010

    @provide_session
    def _mark_backfills_complete(self, *, session: Session = NEW_SESSION) -> None:
        hold = self.completion_hold
        if not hold.fresh():
            age = hold.age()
            self.log.info(
                "sidecar shim: %s; no backfill is marked complete until the sidecar answers",
                "no Tick answered yet" if age is None else f"no Tick answered for {age:.0f}s",
            )
            return
        super()._mark_backfills_complete(session=session)
        for obj in list(session.dirty):
            if isinstance(obj, Backfill) and hold.holds(obj.id, obj.created_at):
                obj.completed_at = None
