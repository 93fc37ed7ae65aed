"""DAGs in a metadata database: serialise a folder the way Airflow does, pause, query.

:func:`serialize_dags` runs ``airflow dags reserialize`` on the default ``dags-folder``
bundle, so no dag-processor has to run during tests; :func:`set_dags_paused` and
:func:`metadata_query` read and write the metadata DB directly (PostgreSQL through
psycopg2, or SQLite), so tests, benchmarks and the demo check state the same way.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2

from tests.support.airflow import run_airflow


def metadata_query(
    env: Mapping[str, str], sql: str, params: Sequence[object] = ()
) -> list[tuple[object, ...]]:
    """Run one statement (``%s`` placeholders) in ``env``'s metadata DB and return its rows.

    Works for PostgreSQL and SQLite alike: the database is the one named by
    ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``; the statement is committed.
    """
    url = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1]
        with contextlib.closing(sqlite3.connect(path)) as lite:
            cursor = lite.execute(sql.replace("%s", "?"), tuple(params))
            rows = cursor.fetchall()
            lite.commit()
            return rows
    parts = urlsplit(url)
    conn = psycopg2.connect(
        host=parts.hostname,
        port=parts.port or 5432,
        user=parts.username,
        password=parts.password,
        dbname=parts.path.lstrip("/"),
    )
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, tuple(params))
            return list(cur.fetchall()) if cur.description else []
    finally:
        conn.close()


def set_dags_paused(env: Mapping[str, str], paused: bool, dag_ids: Iterable[str] | None = None) -> None:
    """Pause or unpause DAGs directly in the metadata DB (all DAGs when ``dag_ids`` is None).

    Same effect as ``airflow dags pause|unpause`` without starting an Airflow CLI process.
    """
    if dag_ids is None:
        metadata_query(env, "UPDATE dag SET is_paused = %s", (paused,))
        return
    for dag_id in dag_ids:
        metadata_query(env, "UPDATE dag SET is_paused = %s WHERE dag_id = %s", (paused, dag_id))


def serialize_dags(
    env: Mapping[str, str],
    dags_folder: Path | None = None,
    *,
    unpause: bool | Iterable[str] = True,
) -> list[str]:
    """Write a DAGs folder into the metadata DB exactly as Airflow does, without a dag-processor.

    Runs ``airflow dags reserialize``: it syncs the configured bundles (the default
    ``dags-folder`` bundle reads ``[core] dags_folder``) to the ``dag_bundle`` table, parses
    the folder and writes ``dag``, ``dag_version``, ``serialized_dag`` and ``dag_code``.

    Args:
        env: from :func:`tests.support.airflow.airflow_environ`.
        dags_folder: overrides ``AIRFLOW__CORE__DAGS_FOLDER`` of ``env``.
        unpause: True unpauses every DAG, an iterable unpauses those ids, False none.

    Returns:
        The ids of the serialized DAGs, sorted.

    Raises:
        RuntimeError: reserialisation failed, or a DAG file had an import error.
    """
    run_env = dict(env)
    if dags_folder is not None:
        run_env["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags_folder)
    run_airflow(run_env, "dags", "reserialize")
    errors = metadata_query(run_env, "SELECT filename, stacktrace FROM import_error")
    if errors:
        raise RuntimeError(f"DAG import errors: {errors!r}")
    dag_ids = sorted(
        str(row[0]) for row in metadata_query(run_env, "SELECT DISTINCT dag_id FROM serialized_dag")
    )
    if unpause is True:
        set_dags_paused(run_env, False)
    elif unpause:
        set_dags_paused(run_env, False, unpause)
    return dag_ids
