"""One backfill's failure stays its own: what the tick does when writing one backfill fails.

A transient database failure (SQLSTATE classes 08, 40, 53, 57, a dropped socket: the
store's classification) is retried on the next tick, the count of failed ticks kept
with the backfill; any other failure sets the backfill aside (``Phase.SET_ASIDE``).
Either way the reason is stored in words a caller may read (the failure class, a
sentence, a correlation id into the one log line holding the details), counted in a
metric, and the tick moves on to the next backfill.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from dataclasses import dataclass
from functools import partial

from sidecar.engine._config import Parts
from sidecar.errors import Aborted, SidecarError, Unavailable
from sidecar.observability import CORRELATION_KEY, SET_ASIDE, WRITE_RETRIES
from sidecar.store import (
    RETRYABLE,
    Failure,
    classify,
    is_database_failure,
    record_write_failure,
    sqlstate_of,
)

__all__ = ["Verdict", "contain", "verdict_of"]

log = logging.getLogger(__name__)

#: Names of the SQLSTATE classes a non-transient failure may come from (the rest: ``database_error``).
_SQLSTATE_CLASSES = {
    "22": "data_exception",
    "23": "integrity_constraint_violation",
    "42": "syntax_error_or_access_rule_violation",
    "54": "program_limit_exceeded",
}


@dataclass(frozen=True)
class Verdict:
    """What a failure to write a backfill is: transient or not, and how it reads to a caller."""

    transient: bool
    reason: str
    """A short class name (the metric's ``reason`` label and the stored reason)."""
    message: str
    """A sentence safe to show a caller: never SQL, parameters or a traceback."""


def verdict_of(exc: Exception, correlation_id: str) -> Verdict:
    """Classify a failure to write a backfill's runs (``correlation_id``: its log line's)."""
    see_log = f"the sidecar's log holds the details under correlation id {correlation_id}"
    if isinstance(exc, Aborted | Unavailable):  # the store's retries of a transient failure ran out
        cause = exc.__cause__
        reason = classify(cause).value if cause is not None else Failure.CONNECTION.value
        return Verdict(
            True,
            reason,
            f"{exc.message.removesuffix('; retry')}; retried on the next tick (correlation id {correlation_id})",
        )
    if isinstance(exc, SidecarError):  # deliberate and caller-safe by construction
        return Verdict(False, exc.reason.lower(), f"{exc.message} (correlation id {correlation_id})")
    if not is_database_failure(exc):
        return Verdict(False, "internal", f"writing its runs failed unexpectedly; {see_log}")
    failure = classify(exc)
    if failure in RETRYABLE:
        return Verdict(
            True, failure.value, f"the metadata database failed ({failure.value}); retried ({see_log})"
        )
    code = sqlstate_of(exc)
    reason = failure.value
    if failure is Failure.OTHER:
        reason = _SQLSTATE_CLASSES.get((code or "")[:2], "database_error")
    state = f" (SQLSTATE {code})" if code else ""
    return Verdict(False, reason, f"the metadata database refused its runs{state}; {see_log}")


async def contain(parts: Parts, backfill_id: int, exc: Exception, now: dt.datetime, *, writing: bool) -> None:
    """Record, log and count a failure of one backfill, so that the tick can go on to the next.

    Args:
        parts: the engine's parts.
        backfill_id: the backfill that failed.
        exc: the failure.
        now: the tick's time.
        writing: whether it failed writing runs (a non-transient failure then sets it
            aside); False when it failed while being completed (retried next tick).
    """
    correlation_id = secrets.token_hex(8)
    verdict = verdict_of(exc, correlation_id)
    set_aside = writing and not verdict.transient
    extra = {CORRELATION_KEY: correlation_id}
    if not writing:  # a fully written backfill: completing it is simply tried again
        log.warning(
            "backfill %s: completing it failed (%s); tried again on the next tick (correlation id %s)",
            backfill_id,
            verdict.reason,
            correlation_id,
            exc_info=exc,
            extra=extra,
        )
        return
    try:
        attempts = await parts.tx.write(
            partial(
                record_write_failure,
                backfill_id=backfill_id,
                reason=verdict.reason,
                message=verdict.message,
                set_aside=set_aside,
                now=now,
            )
        )
    except Exception as recording:  # the database is still failing: the next tick tries again
        log.warning(
            "backfill %s: writing failed (%s) and so did recording it (%s; correlation id %s)",
            backfill_id,
            verdict.reason,
            classify(recording).value,
            correlation_id,
            exc_info=exc,
            extra=extra,
        )
        WRITE_RETRIES.labels(verdict.reason).inc()
        return
    if set_aside:
        SET_ASIDE.labels(verdict.reason).inc()
        log.error(
            "backfill %s set aside (%s): %s",
            backfill_id,
            verdict.reason,
            verdict.message,
            exc_info=exc,
            extra=extra,
        )
        return
    WRITE_RETRIES.labels(verdict.reason).inc()
    log.warning(
        "backfill %s: writing failed (%s), attempt %s: %s",
        backfill_id,
        verdict.reason,
        attempts,
        verdict.message,
        exc_info=exc if not verdict.transient else None,
        extra=extra,
    )
