"""DAG params: reading them from the serialized DAG and validating a run conf."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema

from sidecar.catalog._decode import TYPE, contains_opaque, decode
from sidecar.catalog._model import NOTSET, DagParams, DagTemplate, ParamSpec
from sidecar.errors import InvalidConf, UnsupportedFeature

__all__ = ["ConfRules", "parse_params", "validate_conf", "validate_conf_params"]

_FIELD = "backfill.dag_run_conf"


@dataclass(frozen=True)
class ConfRules:
    """How one Airflow minor checks a run conf against the DAG's params (the same schemas, other order and words)."""

    conf_keys_first: bool = False
    """3.1 (``ParamsDict.update``, then ``validate``): the conf's keys that name params are
    checked first, in the conf's order, then every param; 3.2+ (``deep_merge``): every param
    in the DAG's order, then the conf's other keys."""
    no_value: str = "No value passed"
    """What a param without a value is refused with, after ``Invalid input for param <name>: ``."""


def _is_serialized(val: Any) -> bool:
    """Airflow's rule for whether a param attribute was run through ``serialize``."""
    if isinstance(val, dict):
        return TYPE in val
    if isinstance(val, list):
        return all(isinstance(item, dict) and TYPE in item for item in val)
    return False


def _parse_param(name: str, encoded: Any) -> ParamSpec:
    if not isinstance(encoded, dict) or "__class" not in encoded:
        # Old style: the raw value, no schema, not decoded.
        return ParamSpec(name=name, value=encoded, schema={})
    attrs: dict[str, Any] = {}
    for attr in ("default", "schema"):
        if attr in encoded:
            val = encoded[attr]
            attrs[attr] = decode(val) if _is_serialized(val) else val
    schema = attrs.get("schema") or {}
    if not isinstance(schema, dict) or contains_opaque(schema):
        raise UnsupportedFeature(f"param {name!r} with a schema Airflow cannot decode as JSON")
    return ParamSpec(name=name, value=attrs.get("default"), schema=schema)


def parse_params(encoded: Any) -> DagParams:
    """Read the DAG params as ``DagSerialization._deserialize_params_dict`` does.

    Args:
        encoded: ``data["dag"]["params"]``: a list of ``[name, param]`` pairs, or a mapping
            (Airflow 2.9.2 and older), or None.

    Returns:
        The params.

    Raises:
        UnsupportedFeature: For a layout that cannot be read.
    """
    if encoded is None:
        return DagParams()
    if isinstance(encoded, Mapping):
        pairs = list(encoded.items())
    elif isinstance(encoded, list):
        pairs = []
        for item in encoded:
            if not isinstance(item, list) or len(item) != 2:
                raise UnsupportedFeature("malformed DAG params")
            pairs.append((item[0], item[1]))
    else:
        raise UnsupportedFeature("malformed DAG params")
    specs: dict[str, ParamSpec] = {}
    for name, val in pairs:
        specs[str(name)] = _parse_param(str(name), val)
    return DagParams(tuple(specs.values()))


def _check_one(spec: ParamSpec, value: Any, rules: ConfRules) -> None:
    """Resolve one param like ``SerializedParam.resolve(raises=True)``.

    Raises:
        InvalidConf: When the value is missing or fails the schema.
        UnsupportedFeature: When a non-JSON default would have to be validated.
    """
    try:
        if value is NOTSET:
            raise ValueError(rules.no_value)
        if contains_opaque(value) and spec.schema:
            raise UnsupportedFeature(f"param {spec.name!r} with a non-JSON default and a schema")
        jsonschema.validate(value, spec.schema, format_checker=jsonschema.FormatChecker())
    except UnsupportedFeature:
        raise
    except Exception as e:
        raise InvalidConf(f"Invalid input for param {spec.name}: {e}", field=_FIELD) from None


def validate_conf_params(
    params: DagParams, conf: Mapping[str, Any] | None, rules: ConfRules = ConfRules()
) -> None:
    """Apply ``params.deep_merge(conf).validate()`` semantics (3.1's ``update`` by ``rules``).

    Args:
        params: The DAG params.
        conf: The run conf, or None.
        rules: The Airflow minor's order and words.

    Raises:
        InvalidConf: When the conf is not an object or a param fails validation.
        UnsupportedFeature: When validation depends on a value only Airflow can build.
    """
    if conf is not None and not isinstance(conf, Mapping):
        raise InvalidConf("dag_run_conf must be a JSON object", field=_FIELD)
    if conf is not None and any(not isinstance(k, str) for k in conf):
        raise InvalidConf("dag_run_conf must be a JSON object", field=_FIELD)
    merged: dict[str, tuple[ParamSpec, Any]] = {p.name: (p, p.value) for p in params.params}
    if conf:
        for key, value in conf.items():
            if key in merged:
                merged[key] = (merged[key][0], value)
                if rules.conf_keys_first:
                    _check_one(merged[key][0], value, rules)
            else:
                merged[key] = (ParamSpec(name=key, value=value, schema={}), value)
    for spec, value in merged.values():
        _check_one(spec, value, rules)


def validate_conf(dag: DagTemplate, conf: Mapping[str, Any] | None, rules: ConfRules = ConfRules()) -> None:
    """Validate a run conf against the DAG's params.

    Args:
        dag: The parsed DAG.
        conf: The run conf (a JSON object) or None.
        rules: The Airflow minor's order and words (the newest's by default).

    Raises:
        InvalidConf: When the conf is not an object or fails a param (Airflow's message).
        UnsupportedFeature: When validation needs a value only Airflow can build.
    """
    validate_conf_params(dag.params, conf, rules)
