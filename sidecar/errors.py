"""The one exception tree of the sidecar.

Every error a caller can see is one of these classes. The gRPC layer
(``sidecar.api._errors``) maps them to status codes by type, never by message,
and each class carries the stable ``reason`` string that goes into
``google.rpc.ErrorInfo``::

    SidecarError
    ├── InvalidArgument            INVALID_ARGUMENT     (bad request field; names it)
    │   ├── InvalidDateRange       from_date after to_date
    │   ├── FutureDateRange        the whole range is in the future
    │   ├── InvalidDirection       run backwards with depends_on_past tasks
    │   ├── InvalidReprocess       reprocess "none" with depends_on_past tasks
    │   ├── InvalidConf            conf fails the DAG's params
    │   ├── NoRunsToCreate         the range holds no run
    │   └── InvalidTaskSelection   a task subset that names, matches or can run nothing
    ├── NotFound                   NOT_FOUND
    │   ├── DagNotFound
    │   └── BackfillNotFound       also a backfill the caller may not read
    ├── PermissionDenied           PERMISSION_DENIED (may read the DAG, not do this to it)
    ├── FailedPrecondition         FAILED_PRECONDITION
    │   ├── BackfillNotAllowed     the DAG's allowed_run_types lacks "backfill"
    │   ├── NonPeriodicSchedule    the DAG's timetable cannot be backfilled
    │   ├── UnsupportedFeature     a DAG feature the sidecar cannot reproduce
    │   └── InvalidTransition      e.g. pausing a completed backfill
    ├── AlreadyExists              ALREADY_EXISTS
    │   ├── BackfillAlreadyRunning another backfill of the DAG is active
    │   └── BackfillRangeOverlaps  a concurrent backfill's range overlaps an open one's
    ├── ResourceExhausted          RESOURCE_EXHAUSTED (rate limit; carries retry_after)
    ├── Aborted                    ABORTED (serialization failure or deadlock after retries)
    └── Unavailable                UNAVAILABLE (database unreachable, retryable)
"""

from __future__ import annotations

#: The ``google.rpc.ErrorInfo.domain`` of every error the sidecar reports (gRPC, REST, auth).
DOMAIN = "airflow-sidecar.apache.org"


class SidecarError(Exception):
    """Base of every error the sidecar reports to a caller."""

    reason = "SIDECAR_ERROR"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: The request field at fault, as a field path (e.g. ``from_date``), if any.
        self.field = field


class InvalidArgument(SidecarError):
    reason = "INVALID_ARGUMENT"


class InvalidDateRange(InvalidArgument):
    reason = "INVALID_DATE_RANGE"


class FutureDateRange(InvalidArgument):
    reason = "FUTURE_DATE_RANGE"


class InvalidDirection(InvalidArgument):
    reason = "INVALID_DIRECTION"


class InvalidReprocess(InvalidArgument):
    reason = "INVALID_REPROCESS_BEHAVIOR"


class InvalidConf(InvalidArgument):
    reason = "INVALID_DAG_RUN_CONF"


class NoRunsToCreate(InvalidArgument):
    reason = "NO_RUNS_TO_CREATE"


class InvalidTaskSelection(InvalidArgument):
    reason = "INVALID_TASK_SELECTION"


class NotFound(SidecarError):
    reason = "NOT_FOUND"


class DagNotFound(NotFound):
    reason = "DAG_NOT_FOUND"


class BackfillNotFound(NotFound):
    reason = "BACKFILL_NOT_FOUND"

    @classmethod
    def of(cls, backfill_id: int) -> BackfillNotFound:
        """The one answer for a backfill that does not exist or that the caller may not read.

        Both cases are built here so that they cannot drift apart: a caller learns nothing
        about a backfill of a DAG it may not read, not even that it exists.
        """
        return cls(f"Backfill {backfill_id} not found", field="name")


class PermissionDenied(SidecarError):
    """The caller may read the backfill's DAG but not do this action to it."""

    reason = "PERMISSION_DENIED"


class FailedPrecondition(SidecarError):
    reason = "FAILED_PRECONDITION"


class BackfillNotAllowed(FailedPrecondition):
    reason = "BACKFILL_NOT_ALLOWED"


class NonPeriodicSchedule(FailedPrecondition):
    reason = "NON_PERIODIC_SCHEDULE"


class UnsupportedFeature(FailedPrecondition):
    reason = "UNSUPPORTED_FEATURE"


class InvalidTransition(FailedPrecondition):
    reason = "INVALID_STATE_TRANSITION"


class AlreadyExists(SidecarError):
    reason = "ALREADY_EXISTS"


class BackfillAlreadyRunning(AlreadyExists):
    reason = "BACKFILL_ALREADY_RUNNING"


class BackfillRangeOverlaps(AlreadyExists):
    reason = "BACKFILL_RANGE_OVERLAPS"


class ResourceExhausted(SidecarError):
    reason = "RATE_LIMITED"

    def __init__(self, message: str, *, retry_after: float, field: str | None = None) -> None:
        super().__init__(message, field=field)
        #: Seconds after which the same call may succeed.
        self.retry_after = retry_after


class Aborted(SidecarError):
    """A database transaction kept losing to concurrent ones (serialization failure, deadlock).

    Raised once the bounded retries are spent; the whole call may be retried.
    """

    reason = "DATABASE_CONFLICT"


class Unavailable(SidecarError):
    reason = "UNAVAILABLE"


class SchemaMismatch(Exception):
    """The database does not hold the Airflow metadata schema the sidecar needs (start-up only)."""


class SchemaNotMigrated(SchemaMismatch):
    """No Airflow schema yet (no ``alembic_version`` table, or no revision in it), in a database
    that is empty or holds Airflow's tables (another application's is a :class:`SchemaMismatch`).

    What a database looks like before ``airflow db migrate`` ran or while it runs: unlike the
    other mismatches, waiting may cure it (``doctor --wait`` keeps waiting).
    """
