"""Decoding of Airflow's ``BaseSerialization`` JSON encoding, limited to plain values."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

from sidecar.errors import UnsupportedFeature

__all__ = ["TYPE", "VAR", "Opaque", "contains_opaque", "decode", "pickle_executor_config"]

TYPE = "__type"
VAR = "__var"


@dataclass(frozen=True, slots=True)
class Opaque:
    """A value whose Python form only Airflow can build (datetime, asset, ...).

    Attributes:
        type_name: The ``__type`` tag.
        raw: The encoded value.
    """

    type_name: str
    raw: Any


def decode(value: Any) -> Any:
    """Decode a ``BaseSerialization``-encoded value as ``BaseSerialization.deserialize`` would.

    Plain JSON values, lists, ``dict``, ``tuple``, ``set`` and ``arg_not_set`` are decoded;
    any other tagged value becomes an :class:`Opaque`.

    Args:
        value: The encoded JSON value.

    Returns:
        The decoded value.
    """
    from sidecar.catalog._model import NOTSET

    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return Opaque(type(value).__name__, value)
    type_ = value.get(TYPE)
    var = value.get(VAR)
    if type_ == "dict" and isinstance(var, dict):
        return {k: decode(v) for k, v in var.items()}
    if type_ == "tuple" and isinstance(var, list):
        return tuple(decode(v) for v in var)
    if type_ == "set" and isinstance(var, list):
        try:
            return {decode(v) for v in var}
        except TypeError:  # unhashable items: Airflow cannot decode it either
            return Opaque("set", value)
    if type_ == "arg_not_set":
        return NOTSET
    return Opaque(str(type_), value)


def contains_opaque(value: Any) -> bool:
    """Return whether a decoded value holds an :class:`Opaque` anywhere.

    Args:
        value: A value returned by :func:`decode`.

    Returns:
        True when some part could not be decoded.
    """
    if isinstance(value, Opaque):
        return True
    if isinstance(value, dict):
        return any(contains_opaque(v) for v in value.values())
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(contains_opaque(v) for v in value)
    return False


def pickle_executor_config(task_id: str, config: Any) -> bytes:
    """Pickle an executor_config the way ``ExecutorConfigType`` stores it (protocol 5).

    Args:
        task_id: The task, for error messages.
        config: The decoded executor_config.

    Returns:
        The bytes for ``task_instance.executor_config``.

    Raises:
        UnsupportedFeature: For ``pod_override`` or values only Airflow can build.
    """
    if isinstance(config, dict) and "pod_override" in config:
        raise UnsupportedFeature(f"executor_config with pod_override (task {task_id!r})")
    if contains_opaque(config):
        raise UnsupportedFeature(f"executor_config holding non-JSON values (task {task_id!r})")
    return pickle.dumps(config, protocol=5)
