"""The controls' bounds (docs/controls.md), over the family of values: in range accepted, else refused by field."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.engine import BackfillSpec, Controls
from sidecar.engine._requests import (
    MAX_ACTIVE_RUNS_LIMIT,
    MAX_FAILED_RUNS_LIMIT,
    PRIORITY_LIMIT,
    check_request,
)
from sidecar.errors import InvalidArgument

BOUNDS = {
    "max_failed_runs": (1, MAX_FAILED_RUNS_LIMIT),
    "priority": (-PRIORITY_LIMIT, PRIORITY_LIMIT),
    "dag_max_active_runs": (1, MAX_ACTIVE_RUNS_LIMIT),
}


def spec(**controls: object) -> BackfillSpec:
    day = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    return BackfillSpec("d", day, day, controls=Controls(**controls))  # type: ignore[arg-type]


@given(name=st.sampled_from(sorted(BOUNDS)), value=st.integers(-(2**31), 2**31 - 1))
def test_each_control_in_its_range(name: str, value: int) -> None:
    low, high = BOUNDS[name]
    if low <= value <= high:
        check_request(spec(**{name: value}), None, None)
        return
    with pytest.raises(InvalidArgument) as refused:
        check_request(spec(**{name: value}), None, None)
    assert refused.value.field == f"backfill.{name}"
    assert str(refused.value) == f"{name} must be between {low} and {high}, got {value}"


def test_the_defaults_are_airflows_behaviour() -> None:
    check_request(spec(), None, None)
    assert Controls() == Controls(
        max_failed_runs=None, priority=0, dag_max_active_runs=None, concurrent=False
    )
