"""The thin layer inside the Airflow scheduler that calls the sidecar once per scheduler loop.

It never makes the scheduler fail: a sidecar that is down or slow costs each loop at most
the Tick deadline, and backfills wait until it returns.
"""

from __future__ import annotations
