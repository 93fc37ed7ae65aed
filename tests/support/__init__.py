"""What the tests (and ``bench/``) need to run the sidecar against a real Airflow 3.3.2.

One module per concern; import the module you need (this package re-exports nothing, so
that importing a light module never pulls in a database driver):

========================  ====================================================================
``waiting``               ``wait_until`` / ``async_wait_until``: poll, don't sleep
                          (standard library only).
``ports``                 ``free_port`` on 127.0.0.1 (standard library only).
``airflow``               a self-contained Airflow instance: ``airflow_environ``,
                          ``process_environ``, ``run_module``, ``run_airflow`` (the CLI in a
                          subprocess),
                          the installed version, the shared JWT secret; never imports
                          Airflow itself.
``postgres``              the test PostgreSQL server (psycopg2): URLs, connections,
                          ``fresh_airflow_database`` clones, ``drop_database``, the template
                          lock.
``dags``                  DAGs in a metadata DB: ``serialize_dags`` (``airflow dags
                          reserialize``), ``set_dags_paused``, ``metadata_query``
                          (PostgreSQL or SQLite).
``templates``             the migrated schema template and serialized-DAGs templates,
                          built once per machine / DAGs folder and day.
``processes``             ``AirflowProcess`` (a server in its own process group, with a log
                          and a readiness probe), ``http_ok``, ``grpc_serving``,
                          ``start_sidecar``.
``stack``                 ``airflow api-server`` and a scheduler: ``start_api_server``,
                          ``start_scheduler``, ``airflow_stack``.
``cli``                   the sidecar's CLI in a subprocess: ``sidecar_backfill``
                          (``backfill --target T ...``), ``create_backfill`` (the common
                          ``create`` arguments); ``SIDECAR`` (``python -m sidecar``).
``tcp_proxy``             a loopback TCP proxy that can cut connections (failure injection).
``plugin``                the Airflow plugin's entry point on an api-server's ``PYTHONPATH``
                          (standard library only).
``views``                 ``backfill_view``: an engine ``BackfillView`` with defaults, for the
                          contract tests (the sidecar only, no database).
``fixtures``              the pytest plugin loaded by ``tests/conftest.py``: ``pg_server``,
                          ``airflow_installed``, ``airflow_template``, ``airflow_dags_template``,
                          ``airflow_db`` (``AirflowDatabase``); imports psycopg2 only when one
                          of them runs.
========================  ====================================================================

Dependencies point one way: ``waiting``, ``ports`` <- ``airflow`` <- ``processes`` <-
``stack``; ``airflow`` <- ``cli``; ``postgres`` and ``airflow`` <- ``dags`` <- ``templates`` <- ``fixtures`` (lazily).
Airflow itself always runs in subprocesses (``python -m airflow``), exactly as in production.
"""
