"""Counts in what a user reads agree with their number: ``1 run``, ``2 runs`` (never ``1 runs``)."""

from __future__ import annotations

import re

import pytest

from sidecar._gen.airflow_sidecar.v1 import backfill_pb2 as pb
from sidecar.auth._config import check_jwt_secret
from sidecar.cli._client import failure_line, selection_line
from sidecar.cli._plans import estimate_line, size_line
from sidecar.cli._progress import progress_line
from sidecar.vocabulary import counted

#: A count of 1 followed by a plural noun (the nit this guards against), e.g. ``1 runs``, ``1/1 runs``.
ONE_PLURAL = re.compile(r"(?<![\d.,])1 (failed )?(runs|tasks|task\(s\)|attempts|bytes|seconds|slots)\b")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((1, "run"), "1 run"),
        ((0, "run"), "0 runs"),
        ((2, "run"), "2 runs"),
        ((1, "failed run"), "1 failed run"),
        ((3, "mouse", "mice"), "3 mice"),
        ((1, "mouse", "mice"), "1 mouse"),
        ((100_000, "run", None, ","), "100,000 runs"),
        ((1.0, "second", None, "g"), "1 second"),
        ((2.5, "second", None, "g"), "2.5 seconds"),
    ],
)
def test_counted(args: tuple[float, str], expected: str) -> None:
    assert counted(*args) == expected


def one_of_everything() -> pb.Backfill:
    b = pb.Backfill(id=7, dag_id="etl", state=pb.Backfill.STATE_ACTIVE, max_active_runs=1)
    b.progress.planned = 1
    b.write_failure.reason = "data_exception"
    b.write_failure.message = "refused"
    b.write_failure.attempts = 1
    b.task_selection.selected_task_ids.append("only")
    b.estimate.runs_remaining = 1
    b.estimate.sample_size = 1
    b.estimate.basis = "backfill"
    return b


def test_cli_lines_say_one_run_one_task_one_attempt() -> None:
    b = one_of_everything()
    response = pb.CreateBackfillResponse(backfill=b, summary=pb.PlanSummary(create=1, exact=True))
    lines = {
        "progress": progress_line(b),
        "failure": failure_line(b),
        "selection": selection_line(b),
        "estimate": estimate_line(b),
        "size": size_line(response),
    }
    for what, line in lines.items():
        assert line is not None and not ONE_PLURAL.search(line), (what, line)
    assert lines["progress"].startswith("backfill 7: 0/1 run ")
    assert lines["failure"] == "backfill 7 retrying (1 attempt): data_exception: refused"
    assert lines["selection"] == "backfill 7 runs only 1 task: only"
    assert lines["size"] == "1 run planned, 0 skipped"
    estimate = lines["estimate"]
    assert (
        estimate is not None
        and " for 1 run, 1 at a time" in estimate
        and estimate.endswith(" 1 finished run")
    )


def test_a_one_byte_jwt_secret_is_one_byte() -> None:
    with pytest.raises(ValueError, match=r"^the JWT secret is 1 byte; HS512 needs at least 64 "):
        check_jwt_secret("x", "HS512")
