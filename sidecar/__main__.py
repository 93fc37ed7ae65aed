"""``python -m sidecar``: the same as the ``airflow-sidecar`` command."""

from sidecar.cli import main

raise SystemExit(main())
