"""Table definitions: the Airflow 3.3 tables the sidecar reads and writes, and its own.

Airflow's tables are declared here with only the columns the sidecar touches, as
SQLAlchemy Core tables; start-up (:func:`sidecar.store.prepare`) checks them against
the live schema. The sidecar's own tables live in the PostgreSQL schema
``airflow_sidecar`` (on SQLite, in the main database: the ``sidecar_`` name prefix
keeps them apart) and are created by the migration steps of
:mod:`sidecar.store._database`. Only :mod:`sidecar.store._ledger` writes them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from sidecar import names


class UtcDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored in UTC, as Airflow's ``UtcDateTime`` stores it.

    Naive values are refused; results are always aware (UTC), on SQLite too.
    """

    impl = sa.TIMESTAMP(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime is disallowed")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def _json() -> sa.types.TypeEngine[Any]:
    """JSON on SQLite, JSONB on PostgreSQL (Airflow's ``dag_run.conf`` and carriers)."""
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


#: The PostgreSQL schema of the sidecar's own tables (mapped to none on SQLite).
SIDECAR_SCHEMA = names.SIDECAR_SCHEMA

metadata = sa.MetaData()

# ---------------------------------------------------------------- Airflow's tables

dag = sa.Table(
    "dag",
    metadata,
    sa.Column("dag_id", sa.String(250), primary_key=True),
    sa.Column("is_paused", sa.Boolean),
    sa.Column("is_stale", sa.Boolean),
    sa.Column("allowed_run_types", sa.JSON),
    sa.Column("bundle_name", sa.String(250)),
    sa.Column("bundle_version", sa.String(200)),
    sa.Column("dag_display_name", sa.String(2000)),
)

dag_version = sa.Table(
    "dag_version",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("version_number", sa.Integer, nullable=False),
    sa.Column("dag_id", sa.String(250), nullable=False),
    sa.Column("bundle_name", sa.String(250)),
    sa.Column("bundle_version", sa.String(250)),
)

serialized_dag = sa.Table(
    "serialized_dag",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("dag_id", sa.String(250), nullable=False),
    sa.Column("data", sa.JSON().with_variant(postgresql.JSON(), "postgresql")),
    sa.Column("data_compressed", sa.LargeBinary),
    sa.Column("dag_hash", sa.String(32), nullable=False),
    sa.Column("last_updated", UtcDateTime),
    sa.Column("dag_version_id", sa.Uuid, nullable=False),
)

log_template = sa.Table(
    "log_template",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
)

alembic_version = sa.Table(
    "alembic_version",
    metadata,
    sa.Column("version_num", sa.String(32), primary_key=True),
)

backfill = sa.Table(
    "backfill",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("dag_id", sa.String(250), nullable=False),
    sa.Column("from_date", UtcDateTime, nullable=False),
    sa.Column("to_date", UtcDateTime, nullable=False),
    sa.Column("dag_run_conf", sa.JSON(none_as_null=False), nullable=False),
    sa.Column("is_paused", sa.Boolean),
    sa.Column("reprocess_behavior", sa.String(250), nullable=False),
    sa.Column("max_active_runs", sa.Integer, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("completed_at", UtcDateTime),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("triggering_user_name", sa.String(512)),
)

backfill_dag_run = sa.Table(
    "backfill_dag_run",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("backfill_id", sa.Integer, nullable=False),
    sa.Column("dag_run_id", sa.Integer),
    sa.Column("exception_reason", sa.String(250)),
    sa.Column("logical_date", UtcDateTime),
    sa.Column("partition_key", sa.String(250)),
    sa.Column("sort_ordinal", sa.Integer, nullable=False),
)

dag_run = sa.Table(
    "dag_run",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("dag_id", sa.String(250), nullable=False),
    sa.Column("queued_at", UtcDateTime),
    sa.Column("logical_date", UtcDateTime),
    sa.Column("start_date", UtcDateTime),
    sa.Column("end_date", UtcDateTime),
    sa.Column("state", sa.String(50)),
    sa.Column("run_id", sa.String(250), nullable=False),
    sa.Column("creating_job_id", sa.Integer),
    sa.Column("run_type", sa.String(50), nullable=False),
    sa.Column("triggered_by", sa.String(50)),
    sa.Column("triggering_user_name", sa.String(512)),
    sa.Column("conf", _json()),
    sa.Column("data_interval_start", UtcDateTime),
    sa.Column("data_interval_end", UtcDateTime),
    sa.Column("run_after", UtcDateTime, nullable=False),
    sa.Column("last_scheduling_decision", UtcDateTime),
    sa.Column("log_template_id", sa.Integer),
    sa.Column("created_at", UtcDateTime),
    sa.Column("updated_at", UtcDateTime),
    sa.Column("clear_number", sa.Integer, nullable=False),
    sa.Column("backfill_id", sa.Integer),
    sa.Column("bundle_version", sa.String(250)),
    sa.Column("scheduled_by_job_id", sa.Integer),
    sa.Column("context_carrier", _json()),
    sa.Column("span_status", sa.String(250), nullable=False),
    sa.Column("created_dag_version_id", sa.Uuid),
    sa.Column("partition_key", sa.String(250)),
    sa.Column("partition_date", UtcDateTime),
)

task_instance = sa.Table(
    "task_instance",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("task_id", sa.String(250), nullable=False),
    sa.Column("dag_id", sa.String(250), nullable=False),
    sa.Column("run_id", sa.String(250), nullable=False),
    sa.Column("map_index", sa.Integer, nullable=False),
    sa.Column("start_date", UtcDateTime),
    sa.Column("end_date", UtcDateTime),
    sa.Column("duration", sa.Float),
    sa.Column("state", sa.String(20)),
    sa.Column("try_number", sa.Integer),
    sa.Column("max_tries", sa.Integer),
    sa.Column("hostname", sa.String(1000)),
    sa.Column("unixname", sa.String(1000)),
    sa.Column("pool", sa.String(256), nullable=False),
    sa.Column("pool_slots", sa.Integer, nullable=False),
    sa.Column("queue", sa.String(256)),
    sa.Column("priority_weight", sa.Integer),
    sa.Column("operator", sa.String(1000)),
    sa.Column("custom_operator_name", sa.String(1000)),
    sa.Column("queued_dttm", UtcDateTime),
    sa.Column("scheduled_dttm", UtcDateTime),
    sa.Column("queued_by_job_id", sa.Integer),
    sa.Column("last_heartbeat_at", UtcDateTime),
    sa.Column("pid", sa.Integer),
    sa.Column("executor", sa.String(1000)),
    sa.Column("executor_config", sa.LargeBinary),
    sa.Column("updated_at", UtcDateTime),
    sa.Column("rendered_map_index", sa.String(250)),
    sa.Column("context_carrier", _json()),
    sa.Column("span_status", sa.String(250), nullable=False),
    sa.Column("external_executor_id", sa.Text),
    sa.Column("trigger_id", sa.Integer),
    sa.Column("trigger_timeout", UtcDateTime),
    sa.Column("next_method", sa.String(1000)),
    sa.Column("next_kwargs", _json()),
    sa.Column("task_display_name", sa.String(2000)),
    sa.Column("dag_version_id", sa.Uuid),
    sa.Column("retry_delay_override", sa.Float),
    sa.Column("retry_reason", sa.String(500)),
)

#: Airflow's tables, checked at start-up.
AIRFLOW_TABLES = (
    dag,
    dag_version,
    serialized_dag,
    log_template,
    backfill,
    backfill_dag_run,
    dag_run,
    task_instance,
)

# ---------------------------------------------------------------- the sidecar's own

sidecar_metadata = sa.MetaData(schema=SIDECAR_SCHEMA)

sidecar_schema_version = sa.Table(
    "sidecar_schema_version",
    sidecar_metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("applied_at", UtcDateTime, nullable=False),
)

#: One row per backfill the sidecar owns: its plan, cursor and options Airflow has no column for.
sidecar_backfill = sa.Table(
    "sidecar_backfill",
    sidecar_metadata,
    sa.Column("backfill_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("dag_id", sa.String(250), nullable=False),
    # A Phase (sidecar.store._phases): materializing (| set_aside) -> materialized -> completed | cancelled
    sa.Column("phase", sa.String(20), nullable=False),
    sa.Column("mode", sa.String(10), nullable=False),
    sa.Column("run_backwards", sa.Boolean, nullable=False),
    sa.Column("cutoff", UtcDateTime, nullable=False),
    sa.Column("timetable", sa.JSON, nullable=False),
    sa.Column("dag_run_conf_given", sa.Boolean, nullable=False),
    # NULL while a slow-to-count plan is counted in the background.
    sa.Column("planned_count", sa.BigInteger),
    sa.Column("written_count", sa.BigInteger, nullable=False),
    sa.Column("skipped_count", sa.BigInteger, nullable=False),
    # The last slot written, as ISO strings: resumes the plan strictly after it.
    sa.Column("cursor", sa.JSON),
    sa.Column("request_id", sa.String(128)),
    sa.Column("request_fingerprint", sa.String(64)),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    # Why its last batch failed (migration step 2; NULL while writing succeeds): the class,
    # a sentence safe to show a caller (never SQL or parameters), how many ticks in a row
    # failed, and when. A batch that commits clears them.
    sa.Column("failure_reason", sa.String(40)),
    sa.Column("failure_message", sa.String(500)),
    sa.Column("failure_attempts", sa.Integer),
    sa.Column("failed_at", UtcDateTime),
    # Who created it (migration step 3): request ids are scoped to it ("" without auth).
    sa.Column("principal", sa.String(512), nullable=False, server_default=""),
    sa.UniqueConstraint("principal", "request_id", name="sidecar_backfill_principal_request_id_key"),
    # What its runs are pinned to (migration step 6; NULL for backfills made before it, whose
    # runs take the DAG's latest version): the DAG version and bundle version Airflow's
    # ``_create_backfill`` gives every run of a backfill (the latest at its creation), and how
    # reprocessed runs are cleared (Airflow's resolved ``run_on_latest_version``).
    sa.Column("dag_version_id", sa.Uuid),
    sa.Column("bundle_version", sa.String(250)),
    sa.Column("run_on_latest_version", sa.Boolean),
    # The controls Airflow has no column for (migration step 8; NULL reads as the default):
    # pause after this many failed runs (NULL: never), the failed runs a user's unpause
    # forgave, why the sidecar paused it (NULL: it did not), the shim's priority (NULL: 0),
    # a cap on running runs across the DAG's backfills (NULL: none), and whether it may
    # run beside the DAG's other open backfills over a range that does not overlap theirs.
    sa.Column("max_failed_runs", sa.Integer),
    sa.Column("failed_runs_forgiven", sa.Integer),
    sa.Column("pause_reason", sa.String(200)),
    sa.Column("priority", sa.Integer),
    sa.Column("dag_max_active_runs", sa.Integer),
    sa.Column("concurrent", sa.Boolean),
    # The UTC offsets (seconds east of UTC) the range bounds were given in (migration step 9;
    # NULL: UTC). Airflow's ``backfill`` row stores only the instants; a run on the lower
    # bound keeps the caller's offset in its run id, as Airflow's does.
    sa.Column("from_utc_offset", sa.Integer),
    sa.Column("to_utc_offset", sa.Integer),
)

#: The columns migration step 2 added to ``sidecar_backfill``.
FAILURE_COLUMNS = tuple(
    sidecar_backfill.c[name]
    for name in ("failure_reason", "failure_message", "failure_attempts", "failed_at")
)

#: The columns migration step 6 added to ``sidecar_backfill``.
PINNING_COLUMNS = tuple(
    sidecar_backfill.c[name] for name in ("dag_version_id", "bundle_version", "run_on_latest_version")
)

#: The columns migration step 8 added to ``sidecar_backfill`` (the backfill controls).
CONTROL_COLUMNS = tuple(
    sidecar_backfill.c[name]
    for name in (
        "max_failed_runs",
        "failed_runs_forgiven",
        "pause_reason",
        "priority",
        "dag_max_active_runs",
        "concurrent",
    )
)

#: The columns migration step 9 added to ``sidecar_backfill`` (the range bounds' UTC offsets).
OFFSET_COLUMNS = (sidecar_backfill.c.from_utc_offset, sidecar_backfill.c.to_utc_offset)

#: The sidecar's own secrets, shared by every replica (the page-token key), hex-encoded.
sidecar_secret = sa.Table(
    "sidecar_secret",
    sidecar_metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
)

#: A backfill's task subset (migration step 7; no row: every task runs): what was asked,
#: and the task ids it resolved to at creation, which every later batch and reprocess uses.
sidecar_task_selection = sa.Table(
    "sidecar_task_selection",
    sidecar_metadata,
    sa.Column("backfill_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("task_regex", sa.Text),
    sa.Column("task_ids", sa.JSON, nullable=False),
    sa.Column("include_upstream", sa.Boolean, nullable=False),
    sa.Column("include_downstream", sa.Boolean, nullable=False),
    sa.Column("selected_task_ids", sa.JSON, nullable=False),
)

#: One row per backfill the sidecar created (migration step 5): where its events go (a webhook URL,
#: or NULL for Watch only) and the last state an event was recorded for.
sidecar_notify = sa.Table(
    "sidecar_notify",
    sidecar_metadata,
    sa.Column("backfill_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("url", sa.String(2048)),
    sa.Column("format", sa.String(10), nullable=False),
    # A sidecar.vocabulary.State value: the state the last recorded event (or the creation) saw.
    sa.Column("notified_state", sa.String(20), nullable=False),
)

#: The outbox (migration step 5): one row per event of a backfill, written in the transaction
#: that records it, delivered to the backfill's webhook afterwards (at least once).
sidecar_event = sa.Table(
    "sidecar_event",
    sidecar_metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("backfill_id", sa.Integer, nullable=False, index=True),
    sa.Column("kind", sa.String(30), nullable=False),
    sa.Column("occurred_at", UtcDateTime, nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    # Delivery (only for a backfill with a webhook): attempts made, when the next may start (a
    # lease while one is in flight), when it was delivered, and why the last attempt failed.
    sa.Column("pending", sa.Boolean, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UtcDateTime),
    sa.Column("delivered_at", UtcDateTime),
    sa.Column("last_error", sa.String(300)),
    sa.Index("sidecar_event_pending_idx", "pending", "next_attempt_at"),
)

SIDECAR_TABLES = (
    sidecar_schema_version,
    sidecar_backfill,
    sidecar_secret,
    sidecar_notify,
    sidecar_event,
    sidecar_task_selection,
)
