"""The benchmarks: one script per comparison, each run as a module from the repository root.

    python -m bench.a_vs_airflow --quick    # Airflow's _create_backfill vs the sidecar's eager mode
    python -m bench.b_vs_ceiling            # the sidecar's eager mode vs raw INSERT..SELECT / COPY
    python -m bench.c_windowed --quick      # windowed mode: first queued run, peak memory
    python -m bench.d_scheduler_loop --quick  # the scheduler loop with a backfill active
    python -m bench.e_event_loop            # event-loop latency under 10 worst-case dry runs
    python -m bench.g_makespan --quick      # creation to the last success, sidecar vs Airflow

Running them as modules of the ``bench`` package makes ``tests.support`` (the databases and
processes the tests use) and ``sidecar`` importable without editing ``sys.path``.
"""
