"""Structured logs: one JSON object per line, carrying the backfill and DAG being worked on.

The ids come from a context variable bound around work on one backfill
(:func:`log_context`), so every line logged inside, by any module, carries them.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

_CONTEXT: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("sidecar_log_context", default={})  # noqa: B039

# Attributes every LogRecord has; anything else was passed with ``extra=``.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` (e.g. ``backfill_id=7, dag_id="etl"``) to every log line inside the block."""
    token = _CONTEXT.set({**_CONTEXT.get(), **fields})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", ...context, ...extra, "exc"?}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update(_CONTEXT.get())
        payload.update(
            {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}
        )
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class ContextTextFormatter(logging.Formatter):
    """Plain text, with the bound context appended as ``key=value``."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = _CONTEXT.get()
        if context:
            text += " " + " ".join(f"{k}={v}" for k, v in context.items())
        return text


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Send the sidecar's logs to stderr as JSON lines (``json``) or text (``text``).

    Raises:
        ValueError: an unknown format or level.
    """
    if fmt not in ("json", "text"):
        raise ValueError(f"unknown log format {fmt!r}: use json or text")
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(ContextTextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
