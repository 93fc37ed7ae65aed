"""Steering a backfill: pause, unpause, cancel (each guarded by the ledger's transition table)."""

from __future__ import annotations

import logging

from sidecar.auth import Access
from sidecar.engine._config import Parts
from sidecar.engine._model import BackfillView
from sidecar.engine._reads import get
from sidecar.store import cancel_backfill, set_paused
from sidecar.vocabulary import counted

log = logging.getLogger(__name__)


async def pause(parts: Parts, backfill_id: int, paused: bool, access: Access) -> BackfillView:
    """Pause or unpause; idempotent. The ledger authorises ``access`` on the row it locks.

    Raises:
        BackfillNotFound, PermissionDenied, InvalidTransition: the backfill has ended.
    """
    now = parts.clock()
    await parts.tx.write(lambda conn: set_paused(conn, backfill_id, paused, now, access))
    return await get(parts, backfill_id, access)


async def cancel(parts: Parts, backfill_id: int, access: Access, *, terminate_running: bool) -> BackfillView:
    """Stop creating runs, fail the queued ones (with their task instances), complete the backfill.

    Running runs finish unless ``terminate_running`` is set: then they are failed the
    way Airflow's "mark failed" does (running task instances fail, unfinished ones are
    skipped). One transaction: a cancel is all or nothing, and the ledger authorises
    ``access`` on the row it locks before anything changes.

    Raises:
        BackfillNotFound, PermissionDenied, InvalidTransition: the backfill has ended.
    """
    now = parts.clock()
    states = ("queued", "running") if terminate_running else ("queued",)
    stopped = await parts.tx.write(lambda conn: cancel_backfill(conn, backfill_id, states, now, access))
    log.info("backfill %s cancelled: %s failed (%s)", backfill_id, counted(stopped, "run"), "/".join(states))
    return await get(parts, backfill_id, access)
