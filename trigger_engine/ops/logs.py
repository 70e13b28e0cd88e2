"""Logs for operators: one line per happening, a stable event name plus context.

    log.info("poll.failed", account="acme", trigger="leads", error="HTTP 500")

renders as ``2026-11-27T10:00:00Z WARNING poll.failed account=acme trigger=leads
error="HTTP 500"`` in text, or one JSON object per line with ``log_format = "json"``.
Every line passes through a filter that replaces each configured secret by ``***``
(``Config.secrets()``: API keys, sink secrets and header values, and the credentials of
``source.base_url`` and of sink URLs), and httpx's own request logging (which prints URLs,
and so our API key) is silenced. In text, the message and every context value are escaped
(:func:`~trigger_engine.core.escape.escape_controls`): a value quoting an item key or an
upstream's text cannot forge a line or drive the terminal. JSON lines escape by themselves.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from trigger_engine.core.escape import escape_controls
from trigger_engine.core.redact import REDACTED

_CONTEXT = "te_context"


class Logger:
    """A thin wrapper: ``log.info(event, **context)``."""

    def __init__(self, name: str) -> None:
        self._logger = logging.getLogger(name)

    def _log(self, level: int, event: str, context: dict[str, Any]) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, event, extra={_CONTEXT: context})

    def enabled_for(self, level: int) -> bool:
        """Whether an event at ``level`` would be logged (to skip building its context)."""
        return self._logger.isEnabledFor(level)

    def debug(self, event: str, **context: Any) -> None:
        """Log an event at DEBUG with its context."""
        self._log(logging.DEBUG, event, context)

    def info(self, event: str, **context: Any) -> None:
        """Log an event at INFO with its context."""
        self._log(logging.INFO, event, context)

    def warning(self, event: str, **context: Any) -> None:
        """Log an event at WARNING with its context."""
        self._log(logging.WARNING, event, context)

    def error(self, event: str, **context: Any) -> None:
        """Log an event at ERROR with its context."""
        self._log(logging.ERROR, event, context)


def get_logger(name: str) -> Logger:
    """The operator logger named ``name``."""
    return Logger(name)


def _value(value: Any) -> str:
    """A context value: as it is, or quoted, with ``\\`` and ``\"`` escaped and control
    characters as escapes (``\\n``, ``\\x1b``) inside the quotes, where they cannot be
    mistaken for text that was written with a backslash."""
    text = str(value)
    if text == "" or any(c in text for c in ' "=') or not text.isprintable():
        return '"' + escape_controls(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'
    return text


class _Formatter(logging.Formatter):
    def __init__(self, json_lines: bool) -> None:
        super().__init__()
        self.json_lines = json_lines
        # imported with the first formatter, not with this module: the command line's
        # parser (--help) imports this module and never formats a line
        from orjson import dumps

        self._dumps = dumps

    def format(self, record: logging.LogRecord) -> str:
        context: dict[str, Any] = getattr(record, _CONTEXT, {})
        ts = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        message = record.getMessage()
        if self.json_lines:
            doc = {"ts": ts, "level": record.levelname.lower(), "event": message, **context}
            if record.exc_info:
                doc["exception"] = self.formatException(record.exc_info)
            return REDACTION.redact(self._dumps(doc, default=str).decode())
        parts = [ts, record.levelname, escape_controls(message)]
        parts += [f"{k}={_value(v)}" for k, v in context.items() if v is not None]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self._traceback(record.exc_info)
        # again on the whole line: tracebacks and non-string values carry secrets too
        return REDACTION.redact(line)

    def _traceback(self, exc_info: Any) -> str:
        """The traceback as text: its own line breaks kept, and only those. The messages of
        the exceptions (in the chain too) are escaped whole first: a newline in one is not
        the traceback's, and would start a line of its choosing."""
        text = self.formatException(exc_info)
        exc, seen = exc_info[1], set[int]()
        while isinstance(exc, BaseException) and id(exc) not in seen:
            seen.add(id(exc))
            for chunk in traceback.format_exception_only(type(exc), exc):
                message = chunk.rstrip("\n")
                text = text.replace(message, escape_controls(message))
            exc = exc.__cause__ or exc.__context__
        return "\n".join(escape_controls(line) for line in text.split("\n"))


class RedactingFilter(logging.Filter):
    """Replaces every known secret in a formatted record by ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: list[str] = []
        self.update(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        """Redact these secrets from now on (and only these)."""
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        """``text`` with every known secret replaced by ``***``."""
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the record's message and context (logging's filter hook)."""
        context = getattr(record, _CONTEXT, None)
        if context:
            setattr(
                record,
                _CONTEXT,
                {k: self.redact(v) if isinstance(v, str) else v for k, v in context.items()},
            )
        if self.secrets:
            record.msg = self.redact(record.getMessage())
            record.args = None
        return True


REDACTION = RedactingFilter()


def setup(
    *, level: int = logging.INFO, json_lines: bool = False, secrets: Iterable[str] = ()
) -> None:
    """Configure the root logger once per process (call again to change format/secrets)."""
    REDACTION.update(secrets)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_trigger_engine", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(json_lines))
    handler.addFilter(REDACTION)
    handler._trigger_engine = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # httpx and httpcore log every request URL at INFO/DEBUG, and our API key is in it.
    for noisy in ("httpx", "httpcore", "apscheduler", "aiohttp.access", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
