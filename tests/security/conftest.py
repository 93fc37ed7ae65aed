"""The security suite runs on the integration fixtures: a real server, gateway and database."""

from tests.integration.conftest import (  # noqa: F401  (fixtures, found by pytest by name)
    clean_db,
    database,
    engine,
    gateway,
    http,
    server,
    sql,
)
