"""Template databases that make Airflow 3.3.2's real schema cheap for every test module.

``airflow db migrate`` runs once per machine into the PostgreSQL database
``airflow_template_332`` (:func:`migrate_template`); :func:`serialized_dags_template` adds a
DAGs folder serialized (and unpaused) into a second template, keyed by the folder's
content and the day. A test module's database is then a pure ``CREATE DATABASE ...
TEMPLATE`` clone (:func:`tests.support.postgres.fresh_airflow_database`, tens of
milliseconds instead of a migration and a three-second reserialisation).

Each template carries a marker (a database comment) written only once its build
completed, naming what it was built from (the Airflow version and alembic revision, or
the DAGs and the day), so a template left by another Airflow version, another day or an
interrupted build is rebuilt instead of reused.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.airflow import airflow_environ, installed_airflow_version, run_airflow
from tests.support.dags import serialize_dags
from tests.support.postgres import (
    TEMPLATE_DATABASE,
    Cursor,
    database_comment,
    drop_database_on,
    freeze_as_template,
    pg_connect,
    psycopg2_url,
    template_lock,
)

_MARKER_PREFIX = "airflow-sidecar test template:"
_DAGS_MARKER_PREFIX = "airflow-sidecar dags template:"


@dataclass(frozen=True)
class TemplateInfo:
    """What :func:`migrate_template` built or found."""

    name: str
    airflow_version: str
    alembic_revision: str
    built: bool
    """True when this call ran ``airflow db migrate``; False when a valid template was reused."""
    seconds: float


def _template_marker(version: str, revision: str) -> str:
    """The comment written on the template once ``airflow db migrate`` has completed."""
    return f"{_MARKER_PREFIX} apache-airflow=={version} alembic={revision} complete"


def _parse_marker(comment: str | None) -> tuple[str, str] | None:
    """``(airflow_version, alembic_revision)`` from a complete template's marker, else None."""
    if not comment or not comment.startswith(_MARKER_PREFIX) or not comment.endswith(" complete"):
        return None
    fields = dict(part.split("=", 1) for part in comment.split() if "=" in part)
    version = fields.get("apache-airflow", "").lstrip("=")
    revision = fields.get("alembic", "")
    return (version, revision) if version and revision else None


def migrate_template(
    *,
    name: str = TEMPLATE_DATABASE,
    rebuild: bool = False,
    work_dir: Path | None = None,
) -> TemplateInfo:
    """Make sure ``name`` holds a complete Airflow schema for the installed Airflow.

    The template is reused when its marker names the installed Airflow version; otherwise
    ``airflow db migrate`` runs into a scratch database, which replaces ``name`` only after
    the migration succeeded. A PostgreSQL advisory lock serialises concurrent builders
    (parallel pytest runs on one machine).

    Args:
        name: template database name.
        rebuild: drop and rebuild even if the template looks valid.
        work_dir: where the throw-away ``AIRFLOW_HOME`` for the migration goes.

    Raises:
        RuntimeError: Airflow is not installed, or the migration failed.
    """
    started = time.monotonic()
    version = installed_airflow_version()
    if version is None:
        raise RuntimeError("apache-airflow is not installed; cannot build the Airflow schema template")
    conn = pg_connect()
    try:
        with conn.cursor() as cur, template_lock(cur):
            found = _parse_marker(database_comment(cur, name))
            if not rebuild and found is not None and found[0] == version:
                return TemplateInfo(name, version, found[1], False, time.monotonic() - started)
            revision = _build_template(cur, name, version, work_dir)
            return TemplateInfo(name, version, revision, True, time.monotonic() - started)
    finally:
        conn.close()


def _build_template(cur: Cursor, name: str, version: str, work_dir: Path | None) -> str:
    """Migrate a scratch database, check its alembic revision, freeze it as ``name``."""
    scratch = f"{name}_build"
    drop_database_on(cur, scratch)
    cur.execute(f'CREATE DATABASE "{scratch}"')
    home = Path(tempfile.mkdtemp(prefix="airflow-template-", dir=work_dir))
    try:
        env = airflow_environ(home / "home", psycopg2_url(scratch), home / "dags")
        (home / "dags").mkdir()
        run_airflow(env, "db", "migrate", timeout=600)
    except BaseException:
        drop_database_on(cur, scratch)
        raise
    finally:
        shutil.rmtree(home, ignore_errors=True)
    check = pg_connect(scratch)
    try:
        with check.cursor() as ccur:
            ccur.execute("SELECT version_num FROM alembic_version")
            rows = ccur.fetchall()
    finally:
        check.close()
    if len(rows) != 1:
        raise RuntimeError(f"unexpected alembic_version rows after migrate: {rows!r}")
    revision: str = rows[0][0]
    freeze_as_template(cur, scratch, name, _template_marker(version, revision).replace("'", ""))
    return revision


def _dags_fingerprint(dags_folder: Path, version: str, base: str, unpause: bool) -> str:
    """Hash of everything a serialized-DAGs template depends on.

    The folder's absolute path and every file's content (Airflow stores ``fileloc`` and
    the DAG structure), the Airflow version and base template, and today's UTC date:
    ``dag.next_dagrun*`` are computed from "now" at serialisation, so a template is not
    reused across days.
    """
    digest = hashlib.sha256()
    for part in (
        version,
        base,
        str(dags_folder.resolve()),
        str(unpause),
        time.strftime("%Y-%m-%d", time.gmtime()),
    ):
        digest.update(part.encode() + b"\0")
    for path in sorted(dags_folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(dags_folder)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def serialized_dags_template(
    dags_folder: Path,
    *,
    base: str = TEMPLATE_DATABASE,
    unpause: bool = True,
    work_dir: Path | None = None,
) -> tuple[str, list[str]]:
    """A template database: ``base`` plus ``dags_folder`` serialized (and unpaused).

    ``airflow dags reserialize`` costs about three seconds; doing it once per DAGs-folder
    content (and day) instead of once per test module makes a module's database a pure
    ``CREATE DATABASE ... TEMPLATE`` clone. Templates of earlier days are dropped.

    Returns:
        ``(template_name, dag_ids)``.

    Raises:
        RuntimeError: serialisation failed or a DAG file has an import error.
    """
    version = installed_airflow_version() or "none"
    today = time.strftime("%Y-%m-%d", time.gmtime())
    name = f"{base}_dags_{_dags_fingerprint(dags_folder, version, base, unpause)}"
    conn = pg_connect()
    try:
        with conn.cursor() as cur, template_lock(cur):
            comment = database_comment(cur, name)
            if comment and comment.startswith(_DAGS_MARKER_PREFIX) and comment.endswith(" complete"):
                dag_ids = comment.split("dags=", 1)[1].split()[0]
                return name, [d for d in dag_ids.split(",") if d]
            cur.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{base}_dags_%",))
            for (other,) in cur.fetchall():
                other_comment = database_comment(cur, other) or ""
                if other != name and f" day={today} " not in other_comment:
                    drop_database_on(cur, other)
            scratch = f"{name}_build"
            drop_database_on(cur, scratch)
            cur.execute(f'CREATE DATABASE "{scratch}" TEMPLATE "{base}"')
            home = Path(tempfile.mkdtemp(prefix="airflow-dags-template-", dir=work_dir))
            try:
                env = airflow_environ(home / "home", psycopg2_url(scratch), dags_folder)
                dag_ids_list = serialize_dags(env, dags_folder, unpause=unpause)
            except BaseException:
                drop_database_on(cur, scratch)
                raise
            finally:
                shutil.rmtree(home, ignore_errors=True)
            marker = f"{_DAGS_MARKER_PREFIX} day={today} dags={','.join(dag_ids_list)} complete"
            freeze_as_template(cur, scratch, name, marker)
            return name, dag_ids_list
    finally:
        conn.close()
