"""Lines logged inside :func:`logs_withheld` never reach serve's handler; others do (serve's warm-up)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from sidecar.observability import configure_logging, logs_withheld


@pytest.fixture
def serve_logging(capsys: pytest.CaptureFixture[str]) -> Iterator[None]:
    """serve's handler, writing to the captured stderr."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("DEBUG", "text")
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_only_the_withheld_task_is_silenced(serve_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    log = logging.getLogger("sidecar.test")

    async def beside(started: asyncio.Event) -> None:
        await started.wait()
        log.info("a create beside the warm-up")

    async def main() -> None:
        started = asyncio.Event()
        other = asyncio.create_task(beside(started))  # made outside the block: not withheld
        with logs_withheld():
            log.info("wrote slots 1..2 in a rehearsal")
            started.set()
            await asyncio.sleep(0)
            await other
            log.warning("still inside the rehearsal")
        log.info("after the rehearsal")

    asyncio.run(main())
    err = capsys.readouterr().err
    assert "rehearsal" not in err.replace("after the rehearsal", "")
    assert "a create beside the warm-up" in err
    assert "after the rehearsal" in err
