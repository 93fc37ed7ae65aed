"""Pure reading of Airflow 3.3.2 serialized DAGs into task-instance templates.

Nothing here touches a database or imports Airflow. :func:`parse_dag` turns the JSON of
``serialized_dag.data`` into a :class:`DagTemplate` whose :class:`TaskTemplate` rows carry
what ``TaskInstance.insert_mapping`` writes for a new run; :func:`validate_conf` checks a
run conf the way ``dag.params.deep_merge(conf).validate()`` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sidecar.catalog._model import NOTSET, DagParams, DagTemplate, MapLength, ParamSpec, TaskTemplate
from sidecar.catalog._params import validate_conf_params
from sidecar.catalog._parse import parse_dag

__all__ = [
    "NOTSET",
    "DagParams",
    "DagTemplate",
    "MapLength",
    "ParamSpec",
    "TaskTemplate",
    "parse_dag",
    "validate_conf",
]


def validate_conf(dag: DagTemplate, conf: Mapping[str, Any] | None) -> None:
    """Validate a run conf against the DAG's params.

    Args:
        dag: The parsed DAG.
        conf: The run conf (a JSON object) or None.

    Raises:
        InvalidConf: When the conf is not an object or fails a param (Airflow's message).
        UnsupportedFeature: When validation needs a value only Airflow can build.
    """
    validate_conf_params(dag.params, conf)
