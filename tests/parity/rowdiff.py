"""Column-by-column comparison of the rows two Airflow metadata databases hold.

Rows are matched by natural keys, never by surrogate ids: ``backfill`` by
``(dag_id, from_date, to_date, nth)``, ``dag_run`` by ``(dag_id, logical_date)`` (a
partition's runs by ``(dag_id, partition_date, nth)``, their run ids' random suffix as a form),
``task_instance`` by ``(dag_id, run_id, task_id, map_index)``, ``backfill_dag_run`` by its
backfill and ``sort_ordinal``, ``task_instance_history`` by the TI key and
``try_number``. Foreign keys to surrogate ids are translated to the natural key they
point at. Ids and timestamps are set aside: uuid7 ids and trace carriers are checked for
form, serial ids for presence, and bookkeeping timestamps (``created_at``, ``queued_at``,
...) for NULL-ness only; dates that carry meaning (``logical_date``, the data interval,
``run_after``, ``from_date``, ``to_date``) are compared exactly.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg2.extensions
import psycopg2.extras

from tests.support.postgres import pg_connect

TABLES = ("backfill", "backfill_dag_run", "dag_run", "task_instance", "task_instance_history")

#: Timestamps compared exactly: they are computed, not stamped with "now".
MEANINGFUL_DATES = frozenset(
    {
        "logical_date",
        "data_interval_start",
        "data_interval_end",
        "run_after",
        "from_date",
        "to_date",
        "partition_date",
    }
)
#: Values computed from "now" (``duration`` = end date - start date), compared for NULL-ness.
NOW_DERIVED = frozenset({"duration"})
_TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$")


@dataclass(frozen=True)
class Difference:
    """One differing column (or a row only one side has)."""

    table: str
    key: tuple[Any, ...]
    column: str
    airflow: Any
    sidecar: Any

    def __str__(self) -> str:
        return f"{self.table}{self.key}.{self.column}: airflow={self.airflow!r} sidecar={self.sidecar!r}"


def carrier_form(value: Any) -> str:
    """``'carrier'`` for a well-formed W3C trace carrier in Airflow's extended JSON, else the value."""
    if (
        isinstance(value, dict)
        and value.get("__type") == "dict"
        and isinstance(value.get("__var"), dict)
        and set(value["__var"]) == {"traceparent"}
        and _TRACEPARENT.match(str(value["__var"]["traceparent"]))
    ):
        return "carrier"
    return f"malformed carrier {value!r}"


_PARTITION_RUN_ID = re.compile(r"^(backfill__.+__.+__)[A-Za-z0-9]{8}$")


def partition_run_id_form(run_id: str) -> str:
    """A partition's backfill run id with its random suffix as ``<random8>`` (other ids as they are)."""
    match = _PARTITION_RUN_ID.match(run_id)
    return match.group(1) + "<random8>" if match else run_id


def uuid7_form(value: Any) -> str:
    """``'uuid7'`` for a version-7 UUID, else the value."""
    try:
        return "uuid7" if uuid.UUID(str(value)).version == 7 else f"uuid v{uuid.UUID(str(value)).version}"
    except ValueError:
        return f"not a uuid: {value!r}"


def _timestamp_columns(cur: psycopg2.extensions.cursor, table: str) -> set[str]:
    cur.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public'"
        " AND table_name = %s AND data_type LIKE 'timestamp%%'",
        (table,),
    )
    return {row[0] for row in cur.fetchall()}


def _fetch(cur: psycopg2.extensions.cursor, table: str) -> list[dict[str, Any]]:
    cur.execute(f"SELECT * FROM {table} ORDER BY 1")
    return [dict(row) for row in cur.fetchall()]


def snapshot(database: str) -> dict[str, dict[tuple[Any, ...], dict[str, Any]]]:
    """Every row of :data:`TABLES` in ``database``, normalised and keyed by natural key."""
    conn = pg_connect(database)
    try:
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            raw = {table: _fetch(cur, table) for table in TABLES}
        with conn.cursor() as cur:
            stamps = {
                table: (_timestamp_columns(cur, table) - MEANINGFUL_DATES) | NOW_DERIVED for table in TABLES
            }
    finally:
        conn.close()
    return normalise(raw, stamps)


def _plain(value: Any) -> Any:
    if isinstance(value, memoryview):
        return bytes(value)
    return value


def normalise(
    raw: Mapping[str, list[dict[str, Any]]], stamps: Mapping[str, set[str]]
) -> dict[str, dict[tuple[Any, ...], dict[str, Any]]]:
    """Replace ids by natural keys and forms, bookkeeping timestamps by NULL-ness."""
    nth: dict[tuple[Any, ...], int] = {}
    backfill_key: dict[int, tuple[Any, ...]] = {}
    for row in sorted(raw["backfill"], key=lambda r: r["id"]):
        base = (row["dag_id"], row["from_date"], row["to_date"])
        nth[base] = nth.get(base, 0) + 1
        backfill_key[row["id"]] = (*base, nth[base])
    run_key: dict[int, tuple[Any, ...]] = {}
    run_name: dict[tuple[str, str], str] = {}  # (dag_id, run_id) -> the run id compared
    generation: dict[tuple[Any, ...], int] = {}
    for row in sorted(raw["dag_run"], key=lambda r: r["id"]):
        if row.get("partition_key") is None:
            run_key[row["id"]] = (row["dag_id"], row["logical_date"])
            run_name[(row["dag_id"], row["run_id"])] = row["run_id"]
            continue
        # A partition's runs: by partition date and generation (a reprocessed partition keeps
        # its old run beside the new one), the random suffix of a backfill's run id as a form.
        base = (row["dag_id"], row["partition_date"])
        generation[base] = generation.get(base, 0) + 1
        run_key[row["id"]] = (*base, generation[base])
        run_name[(row["dag_id"], row["run_id"])] = partition_run_id_form(row["run_id"])
    run_carrier = {(row["dag_id"], row["run_id"]): row["context_carrier"] for row in raw["dag_run"]}

    def common(table: str, row: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for column, value in row.items():
            if column in stamps[table]:
                out[column] = "set" if value is not None else None
            elif column == "context_carrier":
                out[column] = carrier_form(value) if value is not None else None
            else:
                out[column] = _plain(value)
        return out

    result: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {table: {} for table in TABLES}
    for row in raw["backfill"]:
        values = common("backfill", row)
        values["id"] = "serial"
        result["backfill"][backfill_key[row["id"]]] = values
    for row in raw["dag_run"]:
        values = common("dag_run", row)
        values["id"] = "serial"
        values["run_id"] = run_name[(row["dag_id"], row["run_id"])]
        values["backfill_id"] = backfill_key.get(row["backfill_id"]) if row["backfill_id"] else None
        result["dag_run"][run_key[row["id"]]] = values
    for row in raw["backfill_dag_run"]:
        values = common("backfill_dag_run", row)
        values["id"] = "serial"
        values["backfill_id"] = backfill_key[row["backfill_id"]]
        values["dag_run_id"] = run_key[row["dag_run_id"]] if row["dag_run_id"] is not None else None
        result["backfill_dag_run"][(backfill_key[row["backfill_id"]], row["sort_ordinal"])] = values
    for row in raw["task_instance"]:
        values = common("task_instance", row)
        values["id"] = uuid7_form(row["id"])
        if row["context_carrier"] is not None:
            same = row["context_carrier"] == run_carrier.get((row["dag_id"], row["run_id"]))
            values["context_carrier"] += " (the run's)" if same else " (its own)"
        values["run_id"] = run_name.get((row["dag_id"], row["run_id"]), row["run_id"])
        key = (row["dag_id"], values["run_id"], row["task_id"], row["map_index"])
        result["task_instance"][key] = values
    for row in raw["task_instance_history"]:
        values = common("task_instance_history", row)
        values["id"] = "serial"
        values["task_instance_id"] = uuid7_form(row["task_instance_id"])
        values["run_id"] = run_name.get((row["dag_id"], row["run_id"]), row["run_id"])
        key = (row["dag_id"], values["run_id"], row["task_id"], row["map_index"], row["try_number"])
        result["task_instance_history"][key] = values
    return result


def diff(
    airflow: Mapping[str, Mapping[tuple[Any, ...], Mapping[str, Any]]],
    sidecar: Mapping[str, Mapping[tuple[Any, ...], Mapping[str, Any]]],
    tables: Iterable[str] = TABLES,
) -> list[Difference]:
    """Every differing column of two snapshots (rows missing on one side count as one difference)."""
    found: list[Difference] = []
    for table in tables:
        left, right = airflow[table], sidecar[table]
        for key in sorted(set(left) | set(right), key=repr):
            if key not in right:
                found.append(Difference(table, key, "<row>", "present", "missing"))
            elif key not in left:
                found.append(Difference(table, key, "<row>", "missing", "present"))
            else:
                for column in sorted(set(left[key]) | set(right[key])):
                    a, b = left[key].get(column), right[key].get(column)
                    if a != b:
                        found.append(Difference(table, key, column, a, b))
    return found
