"""Tests for trigger_engine.ops.logs: one line per happening, secrets never written."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from trigger_engine.ops import logs

SECRET = "s3cret"
NOISY = ("httpx", "httpcore", "apscheduler", "aiohttp.access")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    noisy_levels = {name: logging.getLogger(name).level for name in NOISY}
    secrets = list(logs.REDACTION.secrets)
    yield
    for handler in list(root.handlers):
        if getattr(handler, "_trigger_engine", False):
            root.removeHandler(handler)
    root.setLevel(level)
    for name, noisy_level in noisy_levels.items():
        logging.getLogger(name).setLevel(noisy_level)
    logs.REDACTION.update(secrets)


def _lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


def _ours() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if getattr(h, "_trigger_engine", False)]


@pytest.mark.parametrize(
    ("event", "context", "expected"),
    [
        pytest.param(
            "poll.failed",
            {"account": "acme", "error": f"GET /leads?api_key={SECRET}: HTTP 500"},
            'error="GET /leads?api_key=***: HTTP 500"',
            id="in-context",
        ),
        pytest.param("poll.failed", {"token": SECRET}, "token=***", id="context-is-the-secret"),
        pytest.param(
            f"event.with.{SECRET}", {"account": "acme"}, "event.with.*** account=acme", id="event"
        ),
        pytest.param("x", {"a": f"{SECRET}{SECRET}"}, "a=******", id="repeated"),
    ],
)
def test_text_lines_redact_the_secret(
    capsys: pytest.CaptureFixture[str], event: str, context: dict[str, Any], expected: str
) -> None:
    logs.setup(secrets=[SECRET])
    logs.get_logger("trigger_engine.test").warning(event, **context)
    (line,) = _lines(capsys)
    assert SECRET not in line
    assert expected in line
    assert " WARNING " in line


@pytest.mark.parametrize("json_lines", [False, True])
def test_stdlib_message_args_are_redacted(
    capsys: pytest.CaptureFixture[str], json_lines: bool
) -> None:
    logs.setup(secrets=[SECRET], json_lines=json_lines)
    logging.getLogger("some.library").warning("GET %s failed", f"/leads?api_key={SECRET}")
    (line,) = _lines(capsys)
    assert SECRET not in line
    assert "GET /leads?api_key=*** failed" in line


def test_longest_secret_is_redacted_first(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup(secrets=["abc", "abcdef"])
    logs.get_logger("t").warning("e", value="xabcdefx")
    (line,) = _lines(capsys)
    assert "value=x***x" in line
    assert "def" not in line


class _Boom(Exception):
    pass


def _log_exception() -> None:
    try:
        raise _Boom(f"GET https://alfred.test/leads?api_key={SECRET}")
    except _Boom:
        logging.getLogger("apscheduler.executors").exception("Job raised an exception")


def _log_non_string_context() -> None:
    logs.get_logger("trigger_engine.test").warning(
        "poll.crashed", error=_Boom(f"GET /leads?api_key={SECRET}")
    )


@pytest.mark.parametrize("json_lines", [False, True])
@pytest.mark.parametrize(
    "emit",
    [
        pytest.param(_log_exception, id="exception-traceback"),
        pytest.param(_log_non_string_context, id="exception-object-in-context"),
    ],
)
def test_secret_never_written_whatever_the_value(
    capsys: pytest.CaptureFixture[str], emit: Any, json_lines: bool
) -> None:
    """The contract: no secret in any log line, including tracebacks and non-str values."""
    logs.setup(secrets=[SECRET], json_lines=json_lines)
    emit()
    written = capsys.readouterr().err
    assert written
    assert SECRET not in written


def test_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup(json_lines=True, secrets=[SECRET])
    log = logs.get_logger("trigger_engine.poll")
    log.info("poll.new_items", account="acme", trigger="leads", new_events=3)
    log.warning("poll.failed", account="acme", error=f"key {SECRET} refused", skipped=None)
    lines = _lines(capsys)
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["event"] == "poll.new_items"
    assert first["level"] == "info"
    assert first["account"] == "acme"
    assert first["trigger"] == "leads"
    assert first["new_events"] == 3
    assert first["ts"].endswith("Z")
    assert second["event"] == "poll.failed"
    assert second["level"] == "warning"
    assert second["error"] == "key *** refused"
    assert second["skipped"] is None


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        pytest.param({"account": "acme"}, "account=acme", id="plain"),
        pytest.param({"error": "HTTP 500"}, 'error="HTTP 500"', id="space-quoted"),
        pytest.param({"e": ""}, 'e=""', id="empty-quoted"),
        pytest.param({"e": 'say "hi"'}, 'e="say \\"hi\\""', id="quotes-escaped"),
        pytest.param({"n": 3}, "n=3", id="int"),
    ],
)
def test_text_format(
    capsys: pytest.CaptureFixture[str], context: dict[str, Any], expected: str
) -> None:
    logs.setup()
    logs.get_logger("t").info("some.event", **context)
    (line,) = _lines(capsys)
    ts, level, event, rest = line.split(" ", 3)
    assert ts.endswith("Z")
    assert level == "INFO"
    assert event == "some.event"
    assert rest == expected


def test_none_context_is_left_out_of_text(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup()
    logs.get_logger("t").info("e", a=None, b="x")
    (line,) = _lines(capsys)
    assert line.endswith(" INFO e b=x")


@pytest.mark.parametrize("level", [logging.INFO, logging.WARNING])
def test_level_filters(capsys: pytest.CaptureFixture[str], level: int) -> None:
    logs.setup(level=level)
    log = logs.get_logger("t")
    log.debug("d")
    log.info("i")
    log.warning("w")
    events = [line.split(" ")[2] for line in _lines(capsys)]
    assert events == (["i", "w"] if level == logging.INFO else ["w"])


def test_noisy_loggers_are_at_warning(capsys: pytest.CaptureFixture[str]) -> None:
    logging.getLogger("httpx").setLevel(logging.DEBUG)
    logs.setup(secrets=[SECRET])
    for name in NOISY:
        assert logging.getLogger(name).level == logging.WARNING
    logging.getLogger("httpx").info("HTTP Request: GET http://x/leads?api_key=%s", SECRET)
    assert capsys.readouterr().err == ""


def test_setup_twice_keeps_one_handler(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup(secrets=["old-secret"])
    logs.setup(json_lines=True, secrets=[SECRET])
    assert len(_ours()) == 1
    logs.get_logger("t").warning("e", value=SECRET)
    (line,) = _lines(capsys)
    assert json.loads(line)["value"] == "***"


def test_setup_writes_to_stderr_not_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup()
    logs.get_logger("t").warning("e")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "WARNING e" in captured.err


HOSTILE = "k\n2026-01-01T00:00:00.000000Z ERROR forged\x1b]0;pwned\x07\x1b[2J\u202e"


@pytest.mark.parametrize(
    ("event", "context", "expected"),
    [
        pytest.param(
            "poll.failed",
            {"error": "not JSON (text/html\x1b[2J)"},
            'error="not JSON (text/html\\x1b[2J)"',
            id="quoted-value",
        ),
        pytest.param(
            "poll.failed",
            {"key": HOSTILE},
            'key="k\\n2026-01-01T00:00:00.000000Z ERROR forged\\x1b]0;pwned\\x07\\x1b[2J\\u202e"',
            id="forged-line-in-a-value",
        ),
        pytest.param("e", {"key": "a\nb"}, 'key="a\\nb"', id="escaped-values-are-quoted"),
        pytest.param(
            "e",
            {"path": 'C:\\x1b "q"\x1b'},
            'path="C:\\\\x1b \\"q\\"\\x1b"',
            id="a-written-backslash-stays-distinct",
        ),
        pytest.param("e", {"error": RuntimeError("a\nb")}, 'error="a\\nb"', id="non-string"),
        pytest.param("event\n\x1b[2Jforged", {}, "event\\n\\x1b[2Jforged", id="message"),
    ],
)
def test_text_lines_escape_untrusted_text(
    capsys: pytest.CaptureFixture[str], event: str, context: dict[str, Any], expected: str
) -> None:
    logs.setup()
    logs.get_logger("t").warning(event, **context)
    written = capsys.readouterr().err
    (line,) = written.splitlines()
    assert line.endswith(expected)
    assert "\x1b" not in written


def test_tracebacks_keep_their_lines_and_escape_the_rest(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.setup()
    try:
        raise _Boom(HOSTILE)
    except _Boom:
        logging.getLogger("apscheduler.executors").exception("Job raised an exception")
    written = capsys.readouterr().err
    assert written.splitlines()[0].endswith(" ERROR Job raised an exception")
    assert "Traceback (most recent call last):" in written.splitlines()
    assert "_Boom: k\\n2026-01-01T00:00:00.000000Z ERROR forged\\x1b]0;pwned" in written
    assert "\x1b" not in written
    assert "\u202e" not in written


def test_json_lines_keep_the_exact_text_that_text_lines_escape(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.setup(json_lines=True)
    logs.get_logger("t").warning("poll.failed", key=HOSTILE)
    (line,) = _lines(capsys)
    assert json.loads(line)["key"] == HOSTILE
    logs.setup()
    logs.get_logger("t").warning("poll.failed", key=HOSTILE)
    (line,) = _lines(capsys)
    assert "\x1b" not in line
