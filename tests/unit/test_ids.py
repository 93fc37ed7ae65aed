"""The task instances' ids: RFC 9562 UUIDv7, unique and strictly increasing within a batch and across batches."""

from __future__ import annotations

import itertools
import time
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.store._rows import uuid7_bytes, uuid7s


@settings(max_examples=60, deadline=None)
@given(count=st.integers(min_value=0, max_value=20_000))
def test_a_batch_of_ids_is_uuid7_unique_and_increasing(count: int) -> None:
    before = time.time_ns() // 1_000_000
    ids = [uuid.UUID(bytes=value) for value in uuid7_bytes(count)]
    after = time.time_ns() // 1_000_000
    assert len(ids) == count
    for id_ in ids:
        assert id_.version == 7
        assert id_.variant == uuid.RFC_4122
        assert before <= id_.int >> 80 <= after  # the 48-bit Unix millisecond timestamp
    assert all(a.int < b.int for a, b in itertools.pairwise(ids))
    assert len(set(ids)) == count


def test_later_batches_sort_after_earlier_ones_and_never_repeat() -> None:
    first = uuid7s(1_000)
    time.sleep(0.002)
    second = uuid7s(1_000)
    assert first[-1] < second[0]
    assert not set(first) & set(second)
    assert all(isinstance(id_, uuid.UUID) and type(id_) is uuid.UUID for id_ in first)


def test_ids_of_one_millisecond_still_differ_between_batches() -> None:
    # Two batches in the same millisecond start from independent random counters.
    seen: set[bytes] = set()
    for _ in range(200):
        batch = uuid7_bytes(50)
        assert not seen.intersection(batch)
        seen.update(batch)
