"""Connecting to Airflow's metadata database, checking it, and migrating the sidecar's own tables."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sidecar.errors import SchemaMismatch, SchemaNotMigrated
from sidecar.store._secrets import create_page_token_key
from sidecar.store._tables import (
    AIRFLOW_TABLES,
    CONTROL_COLUMNS,
    FAILURE_COLUMNS,
    OFFSET_COLUMNS,
    PINNING_COLUMNS,
    SIDECAR_SCHEMA,
    sidecar_backfill,
    sidecar_event,
    sidecar_metadata,
    sidecar_notify,
    sidecar_schema_version,
    sidecar_task_selection,
)
from sidecar.store._versions import (
    CONTRACT_OPTION,
    NEWEST,
    SUPPORTED,
    SUPPORTED_RANGE,
    AirflowRowContract,
    contract_for_revision,
)

log = logging.getLogger(__name__)

#: Alembic heads of the Airflow releases whose schema the sidecar writes, to their minor.
SUPPORTED_AIRFLOW_REVISIONS = {rev: c.minor for c in SUPPORTED for rev in sorted(c.revisions)}


@dataclass(frozen=True)
class Database:
    """An engine on Airflow's metadata database, with what the sidecar needs to know of it."""

    engine: AsyncEngine
    """The async engine (asyncpg or aiosqlite), with the sidecar schema mapped for the dialect."""
    dialect: str
    """``postgresql`` or ``sqlite``."""

    @property
    def airflow(self) -> AirflowRowContract:
        """The row contract of the database's Airflow version (the newest until :func:`prepare` ran)."""
        contract = self.engine.sync_engine.get_execution_options().get(CONTRACT_OPTION)
        return contract if isinstance(contract, AirflowRowContract) else NEWEST

    async def ping(self) -> bool:
        """Whether the database answers ``SELECT 1`` (not retried: a readiness probe answers fast)."""
        async with self.engine.connect() as conn:
            return bool(await conn.scalar(sa.select(1)) == 1)

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    # Airflow's scheduler and api-server share the file: wait for locks instead of failing at once.
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA busy_timeout = 30000")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


#: Drivers a user may name (Airflow's own ``sql_alchemy_conn`` included), mapped to the async ones.
_ASYNC_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    "postgresql+psycopg": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+pysqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}


def connect(url: str, *, pool_size: int = 5) -> Database:
    """Create the engine for a SQLAlchemy URL.

    ``postgresql+asyncpg://`` and ``sqlite+aiosqlite:///`` are used as they are; Airflow's
    own synchronous URLs (``postgresql://``, ``postgresql+psycopg2://``, ``sqlite:///``) are
    accepted too and switched to the async driver, with libpq's ``sslmode`` carried over.

    Raises:
        ValueError: the URL names another database.
    """
    try:
        parsed = make_url(url)
    except Exception as exc:  # SQLAlchemy raises ArgumentError with the URL in the message
        raise ValueError("the database URL is not a valid SQLAlchemy URL") from exc
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ValueError(
            f"unsupported database {parsed.drivername!r}: use postgresql+asyncpg://… or sqlite+aiosqlite:///…"
        )
    parsed = parsed.set(drivername=driver)
    if driver == "postgresql+asyncpg":
        connect_args: dict[str, object] = {"server_settings": {"application_name": "airflow-sidecar"}}
        if "sslmode" in parsed.query:
            connect_args["ssl"] = parsed.query["sslmode"]
            parsed = parsed.difference_update_query(["sslmode"])
        engine = create_async_engine(
            parsed, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, connect_args=connect_args
        )
        return Database(engine=engine, dialect="postgresql")
    engine = create_async_engine(
        parsed,
        execution_options={"schema_translate_map": {SIDECAR_SCHEMA: None}},
        connect_args={"timeout": 30},
    )
    event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return Database(engine=engine, dialect="sqlite")


def _check_airflow_schema(conn: Connection) -> AirflowRowContract:
    """The contract of the database's Airflow version, after checking its tables hold its columns."""
    inspector = sa.inspect(conn)
    if not inspector.has_table("alembic_version"):
        _not_migrated_yet(inspector)
        raise SchemaNotMigrated(
            "the database holds no Airflow metadata schema (no alembic_version table; "
            "`airflow db migrate` has not run on it, or not finished)"
        )
    revisions = [row[0] for row in conn.execute(sa.text("SELECT version_num FROM alembic_version"))]
    if not revisions:
        _not_migrated_yet(inspector)
        raise SchemaNotMigrated(
            "the database's alembic_version table holds no revision (`airflow db migrate` has not finished)"
        )
    contract = contract_for_revision(revisions[0]) if len(revisions) == 1 else None
    if contract is None:
        found = ", ".join(repr(r) for r in revisions) or "none"
        raise SchemaMismatch(
            f"the database's Airflow schema is at alembic revision {found}, which is not one of "
            f"{SUPPORTED_RANGE} (revisions {', '.join(SUPPORTED_AIRFLOW_REVISIONS)}); "
            "run the sidecar with a supported Airflow (`airflow db migrate` with it)"
        )
    if contract.not_yet is not None:
        raise SchemaMismatch(
            f"the database holds an Airflow {contract.patches} schema (alembic revision "
            f"{revisions[0]!r}), which the sidecar does not support yet: {contract.not_yet}; "
            f"supported: {SUPPORTED_RANGE}"
        )
    for declared in AIRFLOW_TABLES:
        table = contract.table(declared.name)
        if not inspector.has_table(table.name):
            raise SchemaMismatch(f"the Airflow schema lacks table {table.name!r}")
        live = {c["name"] for c in inspector.get_columns(table.name)}
        missing = sorted(c.name for c in table.columns if c.name not in live)
        if missing:
            raise SchemaMismatch(
                f"Airflow {contract.minor} table {table.name!r} lacks columns {', '.join(missing)}"
            )
    return contract


#: Tables only Airflow's schema holds: a database with one of them but no revision is being migrated.
_AIRFLOW_MARKS = frozenset({"dag", "dag_run", "task_instance"})


def _not_migrated_yet(inspector: sa.Inspector) -> None:
    """Pass for a database ``airflow db migrate`` may be making: empty, or holding Airflow's tables.

    Raises:
        SchemaMismatch: it holds other tables only (another application's database).
    """
    # (On SQLite the sidecar's own tables are beside Airflow's: they stay after `airflow db reset`.)
    others = {
        t for t in inspector.get_table_names() if t != "alembic_version" and not t.startswith("sidecar_")
    }
    if others and not others & _AIRFLOW_MARKS:
        shown = ", ".join(sorted(others)[:3]) + (", ..." if len(others) > 3 else "")
        raise SchemaMismatch(
            f"the database holds no Airflow metadata schema but other tables ({shown}): it is not "
            "Airflow's metadata database (its [database] sql_alchemy_conn)"
        )


@dataclass(frozen=True)
class DatabaseCheck:
    """What ``airflow-sidecar doctor`` learns of the database without changing it."""

    revision: str
    """Alembic revision of Airflow's schema (one of :data:`SUPPORTED_AIRFLOW_REVISIONS`)."""
    airflow_version: str
    """The Airflow release line of that revision (``3.2``, ``3.3``)."""
    clock: dt.datetime | None
    """The database server's ``now()`` (PostgreSQL); None for SQLite, which uses the local clock."""


async def check_database(database: Database) -> DatabaseCheck:
    """Connect, check Airflow's schema as :func:`prepare` does, and read the server's clock; write nothing.

    Raises:
        SchemaMismatch: the database is not a supported Airflow metadata database.
        sqlalchemy.exc.DBAPIError, OSError: the database cannot be reached or refuses the login.
    """
    async with database.engine.connect() as conn:
        contract = await conn.run_sync(_check_airflow_schema)
        revision = (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalar_one()
        clock = None
        if database.dialect == "postgresql":
            clock = (await conn.execute(sa.text("SELECT now()"))).scalar()
    return DatabaseCheck(str(revision), contract.minor, clock)


def _add_columns(conn: Connection, table: sa.Table, columns: tuple[sa.Column[object], ...]) -> None:
    """Add the ``columns`` of ``table`` its live table lacks (step 1 creates new tables whole)."""
    schema = table.schema if conn.dialect.name == "postgresql" else None
    live = {c["name"] for c in sa.inspect(conn).get_columns(table.name, schema=schema)}
    prefix = conn.dialect.identifier_preparer.format_table(table, use_schema=schema is not None)
    for column in columns:
        if column.name not in live:
            kind = column.type.compile(dialect=conn.dialect)
            conn.execute(sa.text(f"ALTER TABLE {prefix} ADD COLUMN {column.name} {kind}"))


def _scope_request_ids(conn: Connection) -> None:
    """Request ids become unique per principal: a ``principal`` column, unique with ``request_id``.

    A database created at this shape by step 1 is left alone. Rows made before the step
    belong to the principal "" (the server without authentication): an id used before
    with authentication on is then free again for each principal, never shared by two.
    """
    schema = SIDECAR_SCHEMA if conn.dialect.name == "postgresql" else None
    inspector = sa.inspect(conn)
    if "principal" in {c["name"] for c in inspector.get_columns(sidecar_backfill.name, schema=schema)}:
        return
    if conn.dialect.name == "postgresql":
        table = f"{SIDECAR_SCHEMA}.{sidecar_backfill.name}"
        conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN principal VARCHAR(512) NOT NULL DEFAULT ''"))
        for unique in inspector.get_unique_constraints(sidecar_backfill.name, schema=schema):
            if unique["column_names"] == ["request_id"]:
                conn.execute(sa.text(f'ALTER TABLE {table} DROP CONSTRAINT "{unique["name"]}"'))
        conn.execute(
            sa.text(
                f"ALTER TABLE {table} ADD CONSTRAINT sidecar_backfill_principal_request_id_key"
                " UNIQUE (principal, request_id)"
            )
        )
        return
    # SQLite cannot drop a column's UNIQUE: rebuild the table at its new shape.
    conn.execute(sa.text("ALTER TABLE sidecar_backfill RENAME TO sidecar_backfill_v1"))
    sidecar_backfill.create(conn)
    # The old table's columns: those later steps add are not there yet (they are NULL).
    old = {c["name"] for c in inspector.get_columns("sidecar_backfill_v1")}
    columns = ", ".join(c.name for c in sidecar_backfill.columns if c.name in old and c.name != "principal")
    conn.execute(
        sa.text(
            f"INSERT INTO sidecar_backfill ({columns}, principal) SELECT {columns}, '' FROM sidecar_backfill_v1"
        )
    )
    conn.execute(sa.text("DROP TABLE sidecar_backfill_v1"))


def _create_secrets(conn: Connection) -> None:
    """The ``sidecar_secret`` table and the page-token key every replica shares."""
    sidecar_metadata.create_all(conn, checkfirst=True)
    create_page_token_key(conn)


# Each migration step takes a connection inside the migration transaction. Step 1 creates
# the tables at their current shape, so later steps check before they change anything.
_MIGRATIONS: list[Callable[[Connection], None]] = [
    lambda conn: sidecar_metadata.create_all(conn, checkfirst=True),
    # 2: why a backfill's runs could not be written (a set-aside backfill's reason).
    lambda conn: _add_columns(conn, sidecar_backfill, FAILURE_COLUMNS),
    # 3: request ids unique per principal, not globally.
    _scope_request_ids,
    # 4: the page-token key every replica shares.
    _create_secrets,
    # 5: events and their webhook deliveries (the outbox).
    lambda conn: sidecar_metadata.create_all(conn, tables=[sidecar_notify, sidecar_event], checkfirst=True),
    # 6: what a backfill's runs are pinned to (DAG version, bundle version, run_on_latest_version).
    lambda conn: _add_columns(conn, sidecar_backfill, PINNING_COLUMNS),
    # 7: task subsets (sidecar_task_selection).
    lambda conn: sidecar_metadata.create_all(conn, tables=[sidecar_task_selection], checkfirst=True),
    # 8: the backfill controls (failed-runs limit, priority, DAG cap, concurrent backfills).
    lambda conn: _add_columns(conn, sidecar_backfill, CONTROL_COLUMNS),
    # 9: the UTC offsets the range bounds were given in (run ids keep the caller's offset).
    lambda conn: _add_columns(conn, sidecar_backfill, OFFSET_COLUMNS),
]


def _migrate(conn: Connection, dialect: str) -> None:
    if dialect == "postgresql":
        conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {SIDECAR_SCHEMA}"))
        # One migrator at a time, whatever the number of replicas starting.
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('airflow_sidecar.migrate'))"))
    sidecar_schema_version.create(conn, checkfirst=True)
    applied = conn.execute(sa.select(sa.func.max(sidecar_schema_version.c.version))).scalar() or 0
    for version, step in enumerate(_MIGRATIONS, start=1):
        if version <= applied:
            continue
        step(conn)
        conn.execute(
            sidecar_schema_version.insert().values(version=version, applied_at=dt.datetime.now(dt.UTC))
        )


async def prepare(database: Database) -> None:
    """Check Airflow's schema, note its version's row contract, bring the sidecar's own tables up to date.

    The contract goes on the engine (an execution option every connection inherits), so the
    code that writes Airflow's rows finds it on its connection
    (:func:`sidecar.store._versions.contract_of`). An unsupported revision is refused before
    anything is written: not even the sidecar's own tables are created.

    Raises:
        SchemaMismatch: the database is not a metadata database of a supported Airflow.
    """
    async with database.engine.begin() as conn:
        contract = await conn.run_sync(_check_airflow_schema)
        await conn.run_sync(_migrate, database.dialect)
    database.engine.update_execution_options(**{CONTRACT_OPTION: contract})
    await ensure_runs_index(database)


#: The sidecar's one index on an Airflow table: a backfill's runs by state (issue 14, ADR 0009).
RUNS_BY_BACKFILL_INDEX = "sidecar_dag_run_backfill_state"
_RUNS_INDEX_COLUMNS = "ON dag_run (backfill_id, state) WHERE backfill_id IS NOT NULL"


async def ensure_runs_index(database: Database) -> bool:
    """Make sure ``dag_run`` has the sidecar's index of a backfill's runs by state; whether it has.

    Every question the tick asks of a backfill's runs (any left? how many of its window are
    unfinished? has it reached its failed-runs limit?) then reads the runs it asks about and
    stops at the first few, never the backfill's finished runs nor the DAG's other runs.
    Partial (``backfill_id IS NOT NULL``): Airflow's scheduled and manual runs are neither
    stored in it nor slowed by it, and every question names a backfill, which implies the
    predicate on PostgreSQL and SQLite.

    Not a migration step, because on PostgreSQL it is built ``CONCURRENTLY`` (outside any
    transaction): Airflow's scheduler keeps writing ``dag_run`` while it is built, however
    large the table. One replica builds it (a try-lock: the others go on without waiting);
    an invalid leftover of an interrupted build is dropped and built again. Best effort: a
    role that may not index Airflow's table (not its owner) gets a warning, and the tick
    stays correct, only reading more rows per backfill.
    """
    try:
        if database.dialect != "postgresql":
            async with database.engine.begin() as conn:
                await conn.execute(
                    sa.text(f"CREATE INDEX IF NOT EXISTS {RUNS_BY_BACKFILL_INDEX} {_RUNS_INDEX_COLUMNS}")
                )
            return True
        autocommit = database.engine.execution_options(isolation_level="AUTOCOMMIT")
        async with autocommit.connect() as conn:
            valid = await conn.scalar(
                sa.text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)"),
                {"name": RUNS_BY_BACKFILL_INDEX},
            )
            if valid:
                return True
            lock = sa.text("SELECT pg_try_advisory_lock(hashtext('airflow_sidecar.runs_index'))")
            if not await conn.scalar(lock):
                log.info("another sidecar is building index %s on dag_run", RUNS_BY_BACKFILL_INDEX)
                return False
            # The build waits for transactions already open on dag_run; one left open (idle in
            # transaction) must not hold serve's start for ever: give up after a while and
            # build it at a later start (the invalid leftover is dropped then).
            await conn.execute(sa.text("SET lock_timeout = '30s'"))
            try:
                if valid is False:  # an interrupted concurrent build leaves an invalid index
                    await conn.execute(sa.text(f"DROP INDEX CONCURRENTLY IF EXISTS {RUNS_BY_BACKFILL_INDEX}"))
                await conn.execute(
                    sa.text(
                        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {RUNS_BY_BACKFILL_INDEX} {_RUNS_INDEX_COLUMNS}"
                    )
                )
            finally:
                await conn.execute(sa.text("RESET lock_timeout"))
                await conn.execute(
                    sa.text("SELECT pg_advisory_unlock(hashtext('airflow_sidecar.runs_index'))")
                )
            log.info("built index %s on dag_run", RUNS_BY_BACKFILL_INDEX)
            return True
    except sa.exc.DBAPIError as exc:
        log.warning(
            "could not build index %s on Airflow's dag_run (%s): backfills still run, and each tick"
            " reads more of a backfill's runs; an owner of dag_run can create it: CREATE INDEX"
            " CONCURRENTLY %s %s",
            RUNS_BY_BACKFILL_INDEX,
            type(exc.orig).__name__ if exc.orig is not None else type(exc).__name__,
            RUNS_BY_BACKFILL_INDEX,
            _RUNS_INDEX_COLUMNS,
        )
        return False
