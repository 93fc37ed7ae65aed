"""The wait before a failed plan count is tried again: doubling, capped, for any number of failures."""

from __future__ import annotations

import pytest

from sidecar.engine._counting import RETRY_FIRST, RETRY_MOST, retry_wait


@pytest.mark.parametrize(
    ("times", "wait"),
    [(1, RETRY_FIRST), (2, 2 * RETRY_FIRST), (3, 4 * RETRY_FIRST), (7, RETRY_MOST), (2000, RETRY_MOST)],
)
def test_the_wait_doubles_up_to_its_cap_without_overflowing(times: int, wait: float) -> None:
    """A count failing every half hour for six weeks is at failure 2,000: still RETRY_MOST."""
    assert retry_wait(times) == wait
