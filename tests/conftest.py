"""Root of the test tree: makes ``tests.support`` importable and loads its fixtures plugin.

The shared fixtures (a real PostgreSQL server, real Airflow 3.3.2 schemas, one database per
test module) live in :mod:`tests.support.fixtures`; that plugin imports neither a database
driver nor Airflow until a test asks for one of its fixtures, so ``pytest tests/unit`` runs
without them (``tests/unit/test_unit_isolation.py`` keeps it so).
"""

from __future__ import annotations

import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Make ``tests.support`` importable however pytest was started (``pytest`` or ``python -m
# pytest``, from any directory).
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

pytest_plugins = ["tests.support.fixtures"]
