"""Backfill events and webhooks against a real Airflow 3.3.2 schema on PostgreSQL and a real HTTP receiver.

Exactly one event per state change whoever made it (a sidecar call, Airflow's own cancel, the
tick's completion; two replicas racing), delivered signed, retried with backoff, given up
visibly; a refused webhook leaves no row behind.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator

import psycopg2.extensions
import pytest

from sidecar import errors
from sidecar.config import WebhookSettings
from sidecar.engine import BackfillEngine, BackfillSpec, DryRun, EngineConfig, Mode
from sidecar.store import Database
from tests.integration.test_engine import spec
from tests.support.webhooks import Receiver, receiver

SECRET = "webhook-secret-for-tests"
LOOPBACK = WebhookSettings(secret=SECRET, allow_private=True, allow_http=True, max_attempts=3)


class Clock:
    """Now, moved by the test."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def hook() -> Iterator[Receiver]:
    with receiver() as r:
        yield r


def _engine(database: Database, clock: Clock, settings: WebhookSettings = LOOPBACK) -> BackfillEngine:
    return BackfillEngine(database, EngineConfig(batch_size=3, lookahead=1, webhooks=settings), clock=clock)


def _with_hook(hook: Receiver, **kw: object) -> BackfillSpec:
    return spec(webhook_url=hook.url, **kw)


def _kinds(hook: Receiver) -> list[str]:
    return [r.json["kind"] for r in hook.snapshot()]


async def test_one_signed_event_per_change_whoever_made_it(
    database: Database, sql: psycopg2.extensions.cursor, clock: Clock, hook: Receiver
) -> None:
    engine = _engine(database, clock)
    created = await engine.create(_with_hook(hook))
    assert not isinstance(created, DryRun)
    await engine.notifier.run_once()
    assert hook.snapshot() == []  # creating is no event
    await engine.set_paused(created.id, True)
    await engine.set_paused(created.id, True)  # idempotent: no second event
    await engine.notifier.run_once()
    await engine.set_paused(created.id, False)  # unpausing records none
    await engine.notifier.run_once()
    # Airflow's own cancel (its UI's button): pause, then complete; the tick cancels it.
    sql.execute("UPDATE backfill SET is_paused = true, completed_at = now() WHERE id = %s", (created.id,))
    await engine.tick()
    for _ in range(3):
        await engine.notifier.run_once()
    got = hook.snapshot()
    assert _kinds(hook) == ["paused", "cancelled"]
    for request in got:
        assert request.signed_by(SECRET)
        assert request.headers["x-sidecar-event"] == request.json["kind"]
        assert request.headers["x-sidecar-event-id"] == str(request.json["id"])
        assert request.json["backfill"]["id"] == created.id
    assert got[1].json["backfill"]["state"] == "cancelled"
    view = await engine.get(created.id)
    assert view.webhook is not None and view.webhook.undelivered == 0 and view.webhook.given_up == 0
    await engine.close()


async def test_completion_by_the_tick_is_one_event(
    database: Database, sql: psycopg2.extensions.cursor, clock: Clock, hook: Receiver
) -> None:
    engine = _engine(database, clock)
    created = await engine.create(_with_hook(hook, mode=Mode.EAGER, webhook_format="slack"))
    assert not isinstance(created, DryRun)
    sql.execute("UPDATE dag_run SET state = 'success' WHERE backfill_id = %s", (created.id,))
    await engine.tick()
    await engine.notifier.run_once()
    await engine.notifier.run_once()
    got = hook.snapshot()
    assert len(got) == 1 and "completed" in got[0].json["text"] and got[0].signed_by(SECRET)
    await engine.close()


async def test_failed_deliveries_are_retried_with_backoff_then_given_up_visibly(
    database: Database, clock: Clock, hook: Receiver
) -> None:
    engine = _engine(database, clock)
    created = await engine.create(_with_hook(hook))
    assert not isinstance(created, DryRun)
    hook.statuses.extend([500, 503, 500])
    await engine.set_paused(created.id, True)
    await engine.notifier.run_once()
    assert len(hook.snapshot()) == 1
    await engine.notifier.run_once()  # not due yet: backoff
    assert len(hook.snapshot()) == 1
    for attempt in (2, 3):
        clock.now += dt.timedelta(minutes=30)
        await engine.notifier.run_once()
        assert len(hook.snapshot()) == attempt
    clock.now += dt.timedelta(hours=2)
    await engine.notifier.run_once()  # three attempts were allowed: given up
    assert len(hook.snapshot()) == 3
    assert len({r.headers["x-sidecar-event-id"] for r in hook.snapshot()}) == 1  # one event, retried
    view = await engine.get(created.id)
    assert view.webhook is not None
    assert (view.webhook.undelivered, view.webhook.given_up) == (0, 1)
    assert view.webhook.last_error == "answered HTTP 500"
    await engine.close()


async def test_two_replicas_record_and_send_each_event_once(
    database: Database, clock: Clock, hook: Receiver
) -> None:
    first, second = _engine(database, clock), _engine(database, clock)
    created = [await first.create(_with_hook(hook, dag_id=d)) for d in ("sidecar_e2e_three",)]
    for view in created:
        assert not isinstance(view, DryRun)
        await first.set_paused(view.id, True)
        await first.cancel(view.id)
    for _ in range(5):
        await asyncio.gather(first.notifier.run_once(), second.notifier.run_once())
    assert sorted(_kinds(hook)) == ["cancelled", "paused"]
    await first.close()
    await second.close()


async def test_a_refused_webhook_writes_nothing(
    database: Database, sql: psycopg2.extensions.cursor, clock: Clock
) -> None:
    off = _engine(database, clock, WebhookSettings())
    with pytest.raises(errors.FailedPrecondition, match="SIDECAR_WEBHOOK_SECRET"):
        await off.create(spec(webhook_url="https://example.com/hook"))
    strict = _engine(database, clock, WebhookSettings(secret=SECRET))
    for url in ("http://example.com/hook", "https://127.0.0.1/hook", "https://10.0.0.8/hook"):
        with pytest.raises(errors.InvalidArgument) as refused:
            await strict.create(spec(webhook_url=url))
        assert refused.value.field == "backfill.webhook.url"
        with pytest.raises(errors.InvalidArgument):
            await strict.create(spec(webhook_url=url), validate_only=True)
    sql.execute(
        "SELECT (SELECT count(*) FROM backfill), (SELECT count(*) FROM airflow_sidecar.sidecar_notify)"
    )
    assert sql.fetchone() == (0, 0)
    await off.close()
    await strict.close()


async def test_a_name_that_resolves_inside_is_refused_at_delivery(
    database: Database, sql: psycopg2.extensions.cursor, clock: Clock
) -> None:
    # Accepted at creation (a name), refused when it resolves to loopback: nothing is sent.
    engine = _engine(database, clock, WebhookSettings(secret=SECRET, allow_http=True))
    created = await engine.create(spec(webhook_url="http://localtest.me/hook"))
    assert not isinstance(created, DryRun)
    await engine.set_paused(created.id, True)
    await engine.notifier.run_once()
    view = await engine.get(created.id)
    assert view.webhook is not None and view.webhook.last_error is not None
    assert "loopback or private" in view.webhook.last_error or "cannot resolve" in view.webhook.last_error
    await engine.close()
