"""``serve``'s warm-up: a create rehearsed on the pool's connection and rolled back.

A process's first create paid for what every later one finds ready: SQLAlchemy compiling
each statement of the path, asyncpg preparing it on the connection, first-use imports and
codecs (issue 14: a fresh process's create took 50-70 ms of CPU, half of it that). The
warm-up pays it once at start, with a windowed create of the last serialized DAG over two
days, rehearsed in one transaction rolled back at the end: no row is left, no metric or
log counts it, no background count starts. What a real create must do (its DAG's decode,
its plan, its rows, its round trips) it still does. Best effort: a refused rehearsal
(no DAG, a paused one, an empty plan, an active backfill) warms what ran before the refusal.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
from dataclasses import replace

from sidecar.engine import _create
from sidecar.engine._config import Parts
from sidecar.engine._counting import BackgroundCounter
from sidecar.engine._model import BackfillSpec
from sidecar.engine._offload import PlanningPool
from sidecar.engine._policies import SchedulerPolicies
from sidecar.errors import SidecarError
from sidecar.observability import logs_withheld
from sidecar.store import some_dag_id
from sidecar.vocabulary import Mode

log = logging.getLogger(__name__)

#: The rehearsed create's range: the two days before now.
_SPAN = dt.timedelta(days=2)


class _NoCount(BackgroundCounter):
    """A rehearsed backfill is never counted (its rows are rolled back)."""

    def __init__(self) -> None:  # no pool, no tasks: nothing is ever started
        pass

    def ensure(self, backfill_id: int) -> None:
        return None


async def warm_up(parts: Parts, policies: SchedulerPolicies, pool: PlanningPool) -> bool:
    """Rehearse a create and roll it back; whether it was rehearsed (a DAG, on PostgreSQL).

    On SQLite nothing is rehearsed: a rehearsal there would be committed
    (:attr:`~sidecar.store.Transactions.can_rehearse`).
    """
    if not parts.tx.can_rehearse:
        return False
    dag_id = await parts.tx.read(some_dag_id)
    if dag_id is None:
        return False
    now = parts.clock()
    spec = BackfillSpec(
        dag_id=dag_id, from_date=now - _SPAN, to_date=now, max_active_runs=1, mode=Mode.WINDOWED
    )
    refused: SidecarError | None = None
    with logs_withheld():  # nothing the rehearsal logs happened
        async with parts.tx.rehearsal() as tx:
            try:
                await _create.create(
                    replace(parts, tx=tx),
                    policies,
                    _NoCount(),
                    pool,
                    spec,
                    request_id=None,
                    validate_only=False,
                    dry_run_limit=None,
                )
            except SidecarError as exc:  # refused: what ran before the refusal is warm
                refused = exc
    if refused is not None:
        log.debug("warm-up create on DAG %s refused: %s", dag_id, refused)
    return True


def settle_heap() -> None:
    """After start-up and the warm-up: move what the process holds out of the collector's way.

    Every module, compiled statement and prepared codec made so far lives as long as the
    process; a full collection traversed all of them again (tens of milliseconds, landing
    in whichever create crossed its threshold: issue 14). Collected once first, then frozen
    (``gc.freeze``): later collections look only at what was made since. For a server
    process only (``serve``, and the benchmarks that measure one), never a library call.
    """
    gc.collect()
    gc.freeze()
