"""Backfill events and their webhook deliveries: an outbox in the sidecar's own tables.

Every backfill the sidecar creates gets a ``sidecar_notify`` row (its webhook, if any, and
the state its last event saw). :func:`record_events` compares that state with the backfill's
state now (one source of truth: :func:`~sidecar.store._phases.lifecycle_of` over the sidecar's
phase and Airflow's ``completed_at``/``is_paused``) and, for a change, moves the row to the new
state and writes the event **in one transaction** with a compare-and-set: so whoever changed
the state (a sidecar call, Airflow's UI, Airflow's completion timer, the tick), the event is
recorded exactly once, by whichever replica sees it first, and a crash loses none (the state
change is in the database; the next pass records it).

Deliveries are claimed with a lease (``next_attempt_at`` moves forward before the request is
sent), so two replicas never send the same event at once and an attempt cut by a crash is
retried once the lease ends; an event is sent again only if the process died between the
receiver's answer and :func:`delivered` (at least once; the event id is the idempotency key).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.store._phases import Phase, lifecycle_of, state_of
from sidecar.store._tables import backfill, sidecar_backfill, sidecar_event, sidecar_notify
from sidecar.vocabulary import State

__all__ = [
    "ENDED_STATES",
    "Delivery",
    "EventKind",
    "RecordedEvent",
    "WebhookStatus",
    "claim_deliveries",
    "delivered",
    "delivery_failed",
    "events_after",
    "record_events",
    "register_backfill",
    "webhook_status",
]

#: States after which nothing more happens to a backfill.
ENDED_STATES = (State.COMPLETED.value, State.CANCELLED.value)


class EventKind:
    """The kinds of events (the ``kind`` of an event and of its webhook payload)."""

    PAUSED = "paused"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    FAILED_THRESHOLD = "failed_threshold"
    """Paused by the sidecar after ``max_failed_runs`` failed runs."""


#: The event a move into a state records (a move to ACTIVE, an unpause, records none).
_KIND_OF = {
    State.PAUSED.value: EventKind.PAUSED,
    State.CANCELLED.value: EventKind.CANCELLED,
    State.COMPLETED.value: EventKind.COMPLETED,
}


@dataclass(frozen=True)
class RecordedEvent:
    """One event of a backfill."""

    id: int
    backfill_id: int
    kind: str
    occurred_at: dt.datetime
    payload: dict[str, Any]


@dataclass(frozen=True)
class Delivery:
    """An event claimed for delivery to its backfill's webhook."""

    event: RecordedEvent
    url: str
    format: str
    attempt: int
    """1 for the first attempt."""


@dataclass(frozen=True)
class WebhookStatus:
    """A backfill's webhook as a caller may see it."""

    url: str
    format: str
    undelivered: int
    """Events not delivered yet (pending retries included; given-up ones excluded)."""
    given_up: int
    """Events whose delivery was abandoned after the last attempt."""
    last_error: str | None


async def register_backfill(
    conn: AsyncConnection, backfill_id: int, url: str | None, format_: str, state: State
) -> None:
    """Note a new backfill's webhook (or none) and its state, in its creation's transaction."""
    await conn.execute(
        sa.insert(sidecar_notify).values(
            backfill_id=backfill_id, url=url, format=format_, notified_state=state.value
        )
    )


def _payload(row: Any, kind: str, state: State, now: dt.datetime) -> dict[str, Any]:
    return {
        "kind": kind,
        "occurred_at": now.isoformat(),
        "backfill": {
            "id": row.backfill_id,
            "name": f"backfills/{row.backfill_id}",
            "dag_id": row.dag_id,
            "from_date": row.from_date.isoformat(),
            "to_date": row.to_date.isoformat(),
            "state": state.value,
            "is_paused": bool(row.is_paused),
        },
    }


async def record_events(
    conn: AsyncConnection, now: dt.datetime, *, backfill_ids: Sequence[int] | None = None, limit: int = 500
) -> list[RecordedEvent]:
    """Record an event for each backfill whose state changed since its last one (at most ``limit``).

    ``backfill_ids``: only these (a call that just changed them); None: every open backfill.
    """
    query = (
        sa.select(
            sidecar_notify.c.backfill_id,
            sidecar_notify.c.notified_state,
            sidecar_notify.c.url,
            sidecar_backfill.c.phase,
            backfill.c.dag_id,
            backfill.c.from_date,
            backfill.c.to_date,
            backfill.c.is_paused,
            backfill.c.completed_at,
        )
        .select_from(
            sidecar_notify.join(backfill, backfill.c.id == sidecar_notify.c.backfill_id).join(
                sidecar_backfill, sidecar_backfill.c.backfill_id == sidecar_notify.c.backfill_id
            )
        )
        .where(sidecar_notify.c.notified_state.not_in(ENDED_STATES))
        .order_by(sidecar_notify.c.backfill_id)
        .limit(limit)
    )
    if backfill_ids is not None:
        query = query.where(sidecar_notify.c.backfill_id.in_(list(backfill_ids)))
    recorded: list[RecordedEvent] = []
    for row in (await conn.execute(query)).all():
        state = state_of(lifecycle_of(Phase(row.phase), row.completed_at), row.is_paused)
        if state.value == row.notified_state:
            continue
        moved = await conn.execute(
            sa.update(sidecar_notify)
            .where(
                sidecar_notify.c.backfill_id == row.backfill_id,
                sidecar_notify.c.notified_state == row.notified_state,
            )
            .values(notified_state=state.value)
        )
        kind = _KIND_OF.get(state.value)
        if moved.rowcount != 1 or kind is None:  # another replica recorded it; or an unpause
            continue
        payload = _payload(row, kind, state, now)
        event_id = (
            await conn.execute(
                sa.insert(sidecar_event)
                .values(
                    backfill_id=row.backfill_id,
                    kind=kind,
                    occurred_at=now,
                    payload=payload,
                    pending=row.url is not None,
                    attempts=0,
                    next_attempt_at=now if row.url is not None else None,
                )
                .returning(sidecar_event.c.id)
            )
        ).scalar_one()
        recorded.append(RecordedEvent(int(event_id), row.backfill_id, kind, now, payload))
    return recorded


async def claim_deliveries(
    conn: AsyncConnection, now: dt.datetime, lease: dt.timedelta, limit: int
) -> list[Delivery]:
    """Claim up to ``limit`` events due for delivery: each attempt is leased until ``now + lease``."""
    due = (
        await conn.execute(
            sa.select(
                sidecar_event.c.id,
                sidecar_event.c.backfill_id,
                sidecar_event.c.kind,
                sidecar_event.c.occurred_at,
                sidecar_event.c.payload,
                sidecar_event.c.attempts,
                sidecar_event.c.next_attempt_at,
                sidecar_notify.c.url,
                sidecar_notify.c.format,
            )
            .select_from(
                sidecar_event.join(
                    sidecar_notify, sidecar_notify.c.backfill_id == sidecar_event.c.backfill_id
                )
            )
            .where(sidecar_event.c.pending.is_(True), sidecar_event.c.next_attempt_at <= now)
            .order_by(sidecar_event.c.id)
            .limit(limit)
        )
    ).all()
    claimed = []
    for row in due:
        taken = await conn.execute(
            sa.update(sidecar_event)
            .where(sidecar_event.c.id == row.id, sidecar_event.c.next_attempt_at == row.next_attempt_at)
            .values(next_attempt_at=now + lease, attempts=row.attempts + 1)
        )
        if taken.rowcount == 1 and row.url is not None:
            event = RecordedEvent(row.id, row.backfill_id, row.kind, row.occurred_at, row.payload)
            claimed.append(Delivery(event, row.url, row.format, row.attempts + 1))
    return claimed


async def delivered(conn: AsyncConnection, event_id: int, now: dt.datetime) -> None:
    """The receiver accepted the event: it is never sent again."""
    await conn.execute(
        sa.update(sidecar_event)
        .where(sidecar_event.c.id == event_id)
        .values(pending=False, delivered_at=now, next_attempt_at=None, last_error=None)
    )


async def delivery_failed(
    conn: AsyncConnection, event_id: int, error: str, retry_at: dt.datetime | None
) -> None:
    """An attempt failed: retry at ``retry_at``, or give up (None)."""
    await conn.execute(
        sa.update(sidecar_event)
        .where(sidecar_event.c.id == event_id)
        .values(pending=retry_at is not None, next_attempt_at=retry_at, last_error=error[:300])
    )


async def events_after(
    conn: AsyncConnection, backfill_id: int, after_id: int, limit: int
) -> list[RecordedEvent]:
    """The backfill's events recorded after event ``after_id``, oldest first (at most ``limit``)."""
    result = await conn.execute(
        sa.select(
            sidecar_event.c.id,
            sidecar_event.c.backfill_id,
            sidecar_event.c.kind,
            sidecar_event.c.occurred_at,
            sidecar_event.c.payload,
        )
        .where(sidecar_event.c.backfill_id == backfill_id, sidecar_event.c.id > after_id)
        .order_by(sidecar_event.c.id)
        .limit(limit)
    )
    return [RecordedEvent(r.id, r.backfill_id, r.kind, r.occurred_at, r.payload) for r in result]


async def webhook_status(conn: AsyncConnection, backfill_id: int) -> WebhookStatus | None:
    """The backfill's webhook and how its deliveries went; None without a webhook."""
    row = (
        await conn.execute(
            sa.select(sidecar_notify.c.url, sidecar_notify.c.format).where(
                sidecar_notify.c.backfill_id == backfill_id, sidecar_notify.c.url.is_not(None)
            )
        )
    ).one_or_none()
    if row is None:
        return None
    pending = sa.func.sum(sa.case((sidecar_event.c.pending.is_(True), 1), else_=0))
    abandoned = sa.and_(
        sidecar_event.c.pending.is_(False),
        sidecar_event.c.delivered_at.is_(None),
        sidecar_event.c.last_error.is_not(None),
    )
    given_up = sa.func.sum(sa.case((abandoned, 1), else_=0))
    counts = (
        await conn.execute(sa.select(pending, given_up).where(sidecar_event.c.backfill_id == backfill_id))
    ).one()
    last_error = (
        await conn.execute(
            sa.select(sidecar_event.c.last_error)
            .where(sidecar_event.c.backfill_id == backfill_id, sidecar_event.c.last_error.is_not(None))
            .order_by(sidecar_event.c.id.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    return WebhookStatus(row.url, row.format, int(counts[0] or 0), int(counts[1] or 0), last_error)
