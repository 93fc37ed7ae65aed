"""The pytest plugin with the shared fixtures: a real PostgreSQL server, real Airflow 3.3.2 schemas.

Loaded by the root ``tests/conftest.py`` (``pytest_plugins``), so every test directory finds
``pg_server``, ``airflow_installed``, ``airflow_template``, ``airflow_dags_template`` and
``airflow_db``. Importing this module loads neither psycopg2 nor Airflow: the fixtures
import :mod:`tests.support.postgres` and :mod:`tests.support.templates` when they first
run, so unit tests, which ask for none of them, run without a database driver.

Cost model: ``airflow db migrate`` runs once per machine into a template database
(:func:`tests.support.templates.migrate_template`, rebuilt only when the installed Airflow
version changes); each test module that asks for ``airflow_db`` gets its own clone of it
(tens of milliseconds). The DAGs of ``tests/dags`` are serialized and unpaused once, into a
second template keyed by the folder's content and the day
(:func:`tests.support.templates.serialized_dags_template`), so a module pays no
``airflow dags reserialize`` (about three seconds) of its own.

On CI (``CI=true``) a missing PostgreSQL server, database driver or Airflow install is an
error, never a silent skip: a green CI run must mean the real-database tests ran.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

from tests.support.airflow import AIRFLOW_VERSION, airflow_environ, installed_airflow_version

if TYPE_CHECKING:
    from tests.support.templates import TemplateInfo

PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: DAG files every ``airflow_db`` gets serialized.
DAGS_FOLDER = PROJECT_ROOT / "tests" / "dags"


def running_on_ci() -> bool:
    """Whether missing infrastructure must fail the run instead of skipping tests."""
    return os.environ.get("CI", "").lower() == "true"


def _unavailable(reason: str) -> NoReturn:
    """Fail loudly on CI, skip elsewhere."""
    if running_on_ci():
        pytest.fail(f"{reason} (CI=true: refusing to skip)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_server() -> str:
    """Check that the test PostgreSQL server is reachable; return its ``host:port``."""
    try:
        from tests.support.postgres import PG_HOST, PG_PORT, pg_is_reachable
    except ImportError as exc:  # the driver is imported here, not when pytest starts
        _unavailable(f"the PostgreSQL driver is not installed ({exc}; pip install -e '.[shim,dev]')")
    if not pg_is_reachable():
        _unavailable(
            f"PostgreSQL is not accepting connections on {PG_HOST}:{PG_PORT} as user postgres "
            "(start it, e.g. with .ci/run, or set SIDECAR_TEST_PG_HOST/PORT/USER)"
        )
    return f"{PG_HOST}:{PG_PORT}"


@pytest.fixture(scope="session")
def airflow_installed() -> str:
    """Check that apache-airflow 3.3.x is importable; return its version."""
    version = installed_airflow_version()
    if version is None or importlib.util.find_spec("airflow") is None:
        _unavailable("apache-airflow is not installed (pip install -e '.[shim,dev]')")
    major_minor = ".".join(AIRFLOW_VERSION.split(".")[:2])
    if not version.startswith(major_minor + "."):
        _unavailable(f"apache-airflow {version} is installed; these tests need {major_minor}.x")
    return version


@pytest.fixture(scope="session")
def airflow_template(
    pg_server: str, airflow_installed: str, tmp_path_factory: pytest.TempPathFactory
) -> TemplateInfo:
    """The migrated template database (built at most once per machine and Airflow version)."""
    from tests.support.templates import migrate_template

    return migrate_template(work_dir=tmp_path_factory.mktemp("airflow-template"))


@pytest.fixture(scope="session")
def airflow_dags_template(
    airflow_template: TemplateInfo, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, tuple[str, ...]]:
    """``(template_name, dag_ids)``: the schema template plus ``tests/dags`` serialized, unpaused.

    Rebuilt when a file under ``tests/dags`` changes (or on a new day), else reused.
    """
    from tests.support.templates import serialized_dags_template

    name, dag_ids = serialized_dags_template(
        DAGS_FOLDER,
        base=airflow_template.name,
        unpause=True,
        work_dir=tmp_path_factory.mktemp("dags-template"),
    )
    return name, tuple(dag_ids)


@dataclass(frozen=True)
class AirflowDatabase:
    """A fresh Airflow 3.3.2 metadata database for one test module."""

    name: str
    asyncpg_url: str
    """For the sidecar (``postgresql+asyncpg://``)."""
    psycopg2_url: str
    """For Airflow processes (``postgresql+psycopg2://``)."""
    env: dict[str, str]
    """Airflow's environment for this database (from ``airflow_environ``)."""
    airflow_home: Path
    dags_folder: Path
    dag_ids: tuple[str, ...]
    """DAGs serialized (and unpaused) into it."""


def _database_name(module_name: str) -> str:
    """A PostgreSQL-safe database name, unique per module and per pytest process."""
    stem = re.sub(r"[^a-z0-9_]", "_", module_name.rsplit(".", 1)[-1].lower())
    return f"sidecar_t_{stem}"[:50] + f"_{os.getpid()}"


@pytest.fixture(scope="module")
def airflow_db(
    request: pytest.FixtureRequest,
    airflow_dags_template: tuple[str, tuple[str, ...]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AirflowDatabase]:
    """A module-scoped database with Airflow's schema and ``tests/dags`` serialized and unpaused.

    A clone of ``airflow_dags_template`` (tens of milliseconds). Set
    ``SIDECAR_KEEP_TEST_DB=1`` to keep the database after the module for debugging.
    """
    from tests.support.postgres import drop_database, fresh_airflow_database

    template, dag_ids = airflow_dags_template
    name = _database_name(request.module.__name__)
    asyncpg_url, psycopg2_url = fresh_airflow_database(name, template=template)
    home = tmp_path_factory.mktemp(f"airflow-home-{name}")
    env = airflow_environ(home, psycopg2_url, DAGS_FOLDER)
    try:
        yield AirflowDatabase(name, asyncpg_url, psycopg2_url, env, home, DAGS_FOLDER, dag_ids)
    finally:
        if os.environ.get("SIDECAR_KEEP_TEST_DB") != "1":
            drop_database(name)
