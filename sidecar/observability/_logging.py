"""Structured logs: one JSON object per line, carrying the backfill and DAG being worked on.

The ids come from a context variable bound around work on one backfill
(:func:`log_context`), so every line logged inside, by any module, carries them.

Values that callers send (DAG ids, request ids, principal names) reach log lines, so neither
format lets them forge one: JSON escapes every control character, and the text format escapes
control and other non-printable characters (a newline becomes a backslash and an ``n``),
quotes context values that hold spaces, ``=`` or quotes, and indents every line of a traceback,
so that each record starts exactly one line that is not indented.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import secrets
import sys
from collections.abc import Iterator
from typing import Any

_CONTEXT: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("sidecar_log_context", default={})  # noqa: B039
_WITHHELD: contextvars.ContextVar[bool] = contextvars.ContextVar("sidecar_logs_withheld", default=False)

#: The ``extra`` field (a JSON log key) and ``ErrorInfo`` metadata key of a correlation id.
CORRELATION_KEY = "correlation_id"

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


@contextlib.contextmanager
def logs_withheld() -> Iterator[None]:
    """Withhold every log line of the work inside the block (in this task and what it awaits).

    For work that is undone at its end, such as ``serve``'s warm-up (a create rehearsed and
    rolled back): what it would log ("wrote slots 1..2") never happened. Applies to the
    handler :func:`configure_logging` installs.
    """
    token = _WITHHELD.set(True)
    try:
        yield
    finally:
        _WITHHELD.reset(token)


def _not_withheld(record: logging.LogRecord) -> bool:
    return not _WITHHELD.get()


def log_failure(logger: logging.Logger, exc: BaseException, where: str) -> str:
    """Log an unexpected failure in full (type, text, traceback) under a new correlation id.

    The caller is answered with the returned id only, so that the details, which may hold SQL,
    parameters or schema names, stay in this log line.

    Args:
        logger: the module's logger.
        exc: the failure.
        where: what failed (an RPC method, a route), for the log line.

    Returns:
        The correlation id (16 hex digits), also in the line's message and its ``correlation_id`` field.
    """
    correlation_id = secrets.token_hex(8)
    logger.error(
        "internal error in %s (correlation id %s): %s",
        where,
        correlation_id,
        type(exc).__name__,
        exc_info=exc,
        extra={CORRELATION_KEY: correlation_id},
    )
    return correlation_id


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


def escape(text: str) -> str:
    """``text`` with control and other non-printable characters escaped as Python escapes them."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escaped(char) for char in text)


def _escaped(char: str) -> str:
    code = ord(char)
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char)
    if named:
        return named
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _context_value(value: Any) -> str:
    text = str(value)
    if not text or any(char in text for char in ' ="'):
        return json.dumps(text)  # ASCII only: every control character escaped
    return escape(text)


class ContextTextFormatter(logging.Formatter):
    """Plain text, with the bound context appended as ``key=value``; one line per record.

    The message and the context are escaped (:func:`escape`); a traceback follows on lines of
    its own, each indented, so no value a caller sent can start a line that looks like a record.
    """

    def format(self, record: logging.LogRecord) -> str:
        record.message = escape(record.getMessage())
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        text = self.formatMessage(record)
        context = _CONTEXT.get()
        if context:
            text += " " + " ".join(f"{escape(str(k))}={_context_value(v)}" for k, v in context.items())
        if record.exc_info:
            text += "\n" + _indented(self.formatException(record.exc_info))
        if record.stack_info:
            text += "\n" + _indented(self.formatStack(record.stack_info))
        return text


def _indented(block: str) -> str:
    return "\n".join("    " + escape(line) for line in block.splitlines())


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
    handler.addFilter(_not_withheld)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
