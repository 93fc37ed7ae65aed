"""Pure reading of Airflow 3.3.2 serialized DAGs into task-instance templates.

Nothing here touches a database or imports Airflow. :func:`parse_dag` turns the JSON of
``serialized_dag.data`` into a :class:`DagTemplate` whose :class:`TaskTemplate` rows carry
what ``TaskInstance.insert_mapping`` writes for a new run; :func:`validate_conf` checks a
run conf the way ``dag.params.deep_merge(conf).validate()`` does.
"""

from __future__ import annotations

from sidecar.catalog._model import NOTSET, DagParams, DagTemplate, MapLength, ParamSpec, TaskTemplate
from sidecar.catalog._params import ConfRules, validate_conf
from sidecar.catalog._parse import parse_dag
from sidecar.catalog._subsets import MATCH_SECONDS, REMOVED_UPSTREAM_MET, TaskSelection, resolve_selection

__all__ = [
    "MATCH_SECONDS",
    "NOTSET",
    "REMOVED_UPSTREAM_MET",
    "ConfRules",
    "DagParams",
    "DagTemplate",
    "MapLength",
    "ParamSpec",
    "TaskSelection",
    "TaskTemplate",
    "parse_dag",
    "resolve_selection",
    "validate_conf",
]
