"""PostgreSQL's bulk write path: ``unnest``-array inserts and binary ``COPY`` on the raw asyncpg connection.

The row *values* still come from :mod:`sidecar.store._rows` (the one source of truth);
this module only changes how they travel. A batch's rows become one column array per
column (or one scalar where every row shares the value, e.g. ``dag_id`` or ``state``)
and go to PostgreSQL in one statement per table, instead of SQLAlchemy's
"insertmanyvalues" pages of bound parameters:

- ``dag_run``: ``INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING RETURNING``,
  because a planned date may meet a run written concurrently (the conflict is then
  recorded as "in flight") and the new ids are needed for ``backfill_dag_run``.
- ``task_instance``: binary ``COPY`` (no conflict is possible: its run was just created
  in this transaction), the fastest way into a table with Airflow's indexes and keys.
  Its records are tuples built straight from what a batch's rows share (no dict per
  row), generated while asyncpg sends them: the driver flushes every 512 KB, so
  PostgreSQL inserts one chunk while Python builds the next (two cores, not one after
  the other).
- ``backfill_dag_run``: ``unnest`` (small rows, one per slot).

Everything runs on the driver connection underneath the caller's SQLAlchemy
connection, so it shares the caller's transaction: the batch and its cursor still
commit or roll back together. Foreign keys and indexes stay exactly as Airflow has them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import cache
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.store._rows import uuid7_bytes
from sidecar.store._tables import backfill_dag_run, dag_run, task_instance

#: How ``task_instance`` rows travel: binary ``COPY`` (default) or an ``unnest`` insert.
TaskInstanceMethod = Literal["copy", "unnest"]

_PG = postgresql.dialect()  # type: ignore[no-untyped-call]


class BulkConnection:
    """The asyncpg connection under a SQLAlchemy connection, sharing its transaction.

    Driver errors are re-raised as SQLAlchemy's ``DBAPIError`` (with the asyncpg error,
    and its SQLSTATE, as ``orig``'s cause), exactly as statements run through SQLAlchemy
    fail, so callers classify and map failures in one way whatever the path.
    """

    def __init__(self, conn: AsyncConnection, fairy: Any) -> None:
        self._dialect = conn.dialect
        self._adapted = fairy.dbapi_connection
        self.driver: Any = fairy.driver_connection

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        """Run ``sql`` and return its records."""
        try:
            return list(await self.driver.fetch(sql, *args))
        except Exception as exc:
            raise self._translate(exc, sql) from exc

    async def copy_records(self, table: str, records: Iterable[tuple[Any, ...]], columns: list[str]) -> None:
        """Binary ``COPY`` of ``records`` into ``table`` (an iterator is consumed as the data is sent)."""
        try:
            await self.driver.copy_records_to_table(table, records=records, columns=columns)
        except Exception as exc:
            raise self._translate(exc, f"COPY {table}") from exc

    def _translate(self, exc: Exception, statement: str) -> Exception:
        try:
            self._adapted._handle_exception(exc)  # raises the DB-API form of a driver error
        except Exception as dbapi_error:
            dbapi = self._dialect.loaded_dbapi
            if not isinstance(dbapi_error, dbapi.Error):
                return dbapi_error
            return sa.exc.DBAPIError.instance(
                statement,
                None,
                dbapi_error,
                dbapi.Error,
                connection_invalidated=self._dialect.is_disconnect(dbapi_error, self._adapted, None),
            )
        return exc


async def driver_connection(conn: AsyncConnection) -> BulkConnection:
    """The asyncpg connection under ``conn``, inside ``conn``'s current transaction."""
    return BulkConnection(conn, await conn.get_raw_connection())


@cache
def _pg_type(table: str, column: str) -> str:
    """The PostgreSQL type name of a column, for casts of unnest arrays (e.g. ``JSONB``)."""
    return str(_TABLES[table].c[column].type.compile(dialect=_PG))


_TABLES: dict[str, sa.Table] = {t.name: t for t in (dag_run, task_instance, backfill_dag_run)}


@cache
def _is_json(table: str, column: str) -> bool:
    return _pg_type(table, column) in ("JSON", "JSONB")


class JsonText(str):
    """A JSON column's value already serialised (e.g. a run's carrier, shared by its task
    instances): sent as it is, not serialised again."""

    __slots__ = ()


def json_text(value: Any) -> JsonText:
    """``value`` serialised once for the bulk path (:class:`JsonText`)."""
    return JsonText(json.dumps(value))


def _encode(table: str, column: str, value: Any) -> Any:
    """A value as asyncpg expects it: JSON columns travel as their serialised text.

    ``None`` in a JSON column becomes JSON ``null``, as SQLAlchemy's ``JSON`` type (with
    ``none_as_null=False``, the tables' setting) writes it on the simple path; a
    :class:`JsonText` is already serialised.
    """
    if _is_json(table, column) and type(value) is not JsonText:
        return json.dumps(value)
    return value


def _encode_all(table: str, column: str, values: list[Any]) -> list[Any]:
    """:func:`_encode` of a column's values, deciding once for the column (most need nothing)."""
    if not _is_json(table, column):
        return values
    dumps = json.dumps
    return [value if type(value) is JsonText else dumps(value) for value in values]


def _split_constant_columns(
    table: str, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]
) -> tuple[dict[str, Any], list[str]]:
    """Columns whose value is the same in every row (sent once) and the varying ones (sent as arrays)."""
    first = rows[0]
    constant: dict[str, Any] = {}
    varying: list[str] = []
    for column in columns:
        value = first[column]
        if all(row[column] == value for row in rows):
            constant[column] = value
        else:
            varying.append(column)
    return constant, varying


def _unnest_insert_sql(
    table: str, columns: Sequence[str], constant: Mapping[str, Any], varying: Sequence[str], suffix: str
) -> tuple[str, list[str]]:
    """``INSERT INTO t (cols) SELECT $1::type, ..., u.* FROM unnest($k::type[], ...) AS u`` and its parameter order."""
    params: list[str] = []
    selects: list[str] = []
    arrays: list[str] = []
    for column in columns:
        params.append(column)
        placeholder = f"${len(params)}::{_pg_type(table, column)}"
        if column in constant:
            selects.append(placeholder)
        else:
            arrays.append(placeholder + "[]")
            selects.append(f'u."{column}"')
    names = ", ".join(f'"{c}"' for c in columns)
    aliases = ", ".join(f'"{c}"' for c in varying)
    source = f" FROM unnest({', '.join(arrays)}) AS u({aliases})" if arrays else ""
    sql = f"INSERT INTO {table} ({names}) SELECT {', '.join(selects)}{source} {suffix}".rstrip()
    return sql, params


async def unnest_insert(
    driver: BulkConnection,
    table: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    suffix: str = "",
) -> list[Any]:
    """Insert ``rows`` (dicts with the same keys) into ``table`` with one ``unnest`` statement.

    Args:
        driver: The asyncpg connection (see :func:`driver_connection`).
        table: An Airflow table this module knows the column types of.
        rows: The rows, as :mod:`sidecar.store._rows` builds them.
        suffix: SQL after the ``SELECT`` (``ON CONFLICT ...``, ``RETURNING ...``).

    Returns:
        The records the statement returns (empty without ``RETURNING``).
    """
    if not rows:
        return []
    columns = list(rows[0])
    constant, varying = _split_constant_columns(table, columns, rows)
    sql, order = _unnest_insert_sql(table, columns, constant, varying, suffix)
    args: list[Any] = []
    for column in order:
        if column in constant:
            args.append(_encode(table, column, constant[column]))
        else:
            args.append(_encode_all(table, column, [row[column] for row in rows]))
    return await driver.fetch(sql, *args)


async def unnest_task_instances(driver: BulkConnection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert new task instances (of runs created in this transaction) with one ``unnest`` statement."""
    await unnest_insert(driver, "task_instance", rows)


def _new_ids(count: int) -> list[str]:
    """``count`` uuid7 ids (:func:`uuid7_bytes`) as 32 hex digits each.

    asyncpg parses a ``str`` into a ``uuid`` column's 16 bytes in C, and a ``str`` is no
    object the garbage collector tracks: a batch's ten thousand ids held as UUID objects
    (tracked) made the collector run, and promote them, several times a batch.
    """
    return list(map(bytes.hex, uuid7_bytes(count)))


#: The columns a run's task instances do not share, first in the ``COPY`` column list.
_PER_RUN = ("id", "run_id", "context_carrier")


async def copy_task_instances(
    driver: BulkConnection,
    bases: Sequence[Mapping[str, Any]],
    runs: Sequence[tuple[str, Any]],
    columns: Sequence[str],
) -> None:
    """Binary ``COPY`` of the task instances of new runs (created in this transaction).

    Args:
        driver: The asyncpg connection (see :func:`driver_connection`).
        bases: What every run's task instances share (``_rows.task_instance_bases``).
        runs: ``(run_id, context_carrier)`` of each new run (the carrier may come
            serialised already, :class:`JsonText`).
        columns: The ``task_instance`` columns the database's Airflow version has (those
            ``bases`` lack keep their defaults).

    Each run's rows are ``bases`` with a fresh uuid7 ``id`` (one draw for the batch), its
    ``run_id`` and its carrier (serialised at most once per run); the tuples are generated
    as the driver sends them.
    """
    if not bases or not runs:
        return
    shared = [c for c in columns if c in bases[0] and c not in _PER_RUN]
    rests = [tuple(_encode("task_instance", c, base[c]) for c in shared) for base in bases]
    ids = iter(_new_ids(len(rests) * len(runs)))

    def records() -> Iterator[tuple[Any, ...]]:
        for run_id, carrier in runs:
            head = (run_id, _encode("task_instance", "context_carrier", carrier))
            for rest, id_ in zip(rests, ids, strict=False):
                yield (id_,) + head + rest  # noqa: RUF005 (two concatenations: cheaper than unpacking)

    await driver.copy_records("task_instance", records(), [*_PER_RUN, *shared])
