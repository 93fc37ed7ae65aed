"""Airflow's names as the installed minor spells them, so the parity suite runs on 3.1, 3.2 and 3.3.

3.2 and 3.3 export the timetables from the Task SDK and serialize DAGs with
``DagSerialization``; 3.1 has them in ``airflow.timetables`` and ``SerializedDAG``. Everything
else the suite uses is spelled the same on every supported minor.
"""

from __future__ import annotations

try:
    from airflow.sdk import (
        CronDataIntervalTimetable,
        CronTriggerTimetable,
        DeltaDataIntervalTimetable,
        DeltaTriggerTimetable,
        MultipleCronTriggerTimetable,
    )
except ImportError:  # Airflow 3.1
    from airflow.timetables.interval import (  # type: ignore[no-redef]
        CronDataIntervalTimetable,
        DeltaDataIntervalTimetable,
    )
    from airflow.timetables.trigger import (  # type: ignore[no-redef]
        CronTriggerTimetable,
        DeltaTriggerTimetable,
        MultipleCronTriggerTimetable,
    )

try:
    from airflow.serialization.serialized_objects import DagSerialization
except ImportError:  # Airflow 3.1
    from airflow.serialization.serialized_objects import (  # type: ignore[no-redef]
        SerializedDAG as DagSerialization,
    )

__all__ = [
    "CronDataIntervalTimetable",
    "CronTriggerTimetable",
    "DagSerialization",
    "DeltaDataIntervalTimetable",
    "DeltaTriggerTimetable",
    "MultipleCronTriggerTimetable",
]
