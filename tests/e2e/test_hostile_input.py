"""The real CLI against hostile input (issue 12): a credential in a URL never leaves it, and
text an upstream or a receiver controls is neutralised before it reaches a terminal or a
text log line. JSON outputs stay exact."""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest

from tests.e2e.conftest import ConfigWriter, run_cli
from tests.receiver import Receiver
from trigger_engine.sandbox import Fault, SimulatorThread

LEADS = ("/leads",)
PASSWORD = "pw-5ecret-41c7"
TOKEN = "tok-5ecret-9f2c"
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z [A-Z]+ \S")


def everything_written(workdir: Path, *outputs: str) -> str:
    """The outputs and every byte of the SQLite database (and its WAL)."""
    db = b"".join(p.read_bytes() for p in workdir.glob("te.db*"))
    return "\n".join(outputs) + db.decode("latin-1")


def sink_toml(url: str) -> str:
    return f'[[sinks]]\nname = "crm"\nurl = "{url}"\n'


# ----------------------------------------------------------------- credentials in URLs


def test_a_password_in_base_url_is_never_shown(
    simulator: SimulatorThread, write_config: ConfigWriter, workdir: Path, cli_env: dict[str, str]
) -> None:
    base_url = simulator.base_url.replace("http://", f"http://te-user:{PASSWORD}@")
    shown = simulator.base_url.replace("http://", "http://***@")
    simulator.sim.inject(Fault(status=500, count=1000))
    outputs = []
    for log_format in ("text", "json"):
        write_config(base_url=base_url, sinks="", engine_extra=f'log_format = "{log_format}"')
        once = run_cli("run", "--once", cwd=workdir, env=cli_env)
        assert once.returncode == 1
        assert f"acme/leads: failed: account 'acme', trigger 'leads': GET {shown}/leads?" in (
            once.stdout
        )
        assert "poll.failed" in once.stderr
        check = run_cli("check", cwd=workdir, env=cli_env)
        assert check.returncode == 1
        assert f"GET {shown}/leads?api_key=***" in check.stdout
        outputs += [once.stdout, once.stderr, check.stdout, check.stderr]
    status = run_cli("status", "--json", cwd=workdir, env=cli_env)
    errors = [t["last_error"] for t in json.loads(status.stdout)["triggers"]]
    assert all(f"GET {shown}/" in error for error in errors), errors
    text = run_cli("status", cwd=workdir, env=cli_env)
    triggers = run_cli("triggers", cwd=workdir, env=cli_env)
    written = everything_written(
        workdir, *outputs, status.stdout, status.stderr, text.stdout, triggers.stdout
    )
    assert PASSWORD not in written
    assert "te-user" not in written  # the whole userinfo is redacted, not only the password


@contextmanager
def raw_server(answer: bytes) -> Iterator[str]:
    """A TCP server on 127.0.0.1 that reads a request and writes ``answer``, whatever it is
    (what aiohttp's server refuses to send: control characters in headers, or not HTTP)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(65536)
                    conn.sendall(answer)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        server.close()


@pytest.fixture
def garbage_receiver() -> Iterator[str]:
    """A receiver that answers with bytes that are not HTTP."""
    with raw_server(b"NOT-HTTP \x1b[2J garbage\r\n\r\n") as url:
        yield url + "/hook"


def test_a_token_in_a_sink_url_is_never_shown(
    simulator: SimulatorThread,
    garbage_receiver: str,
    write_config: ConfigWriter,
    workdir: Path,
    cli_env: dict[str, str],
) -> None:
    outputs = []
    for log_format in ("text", "json"):
        write_config(
            base_url=simulator.base_url,
            # a retry never falls due during the test: each delivery is attempted once
            sinks=sink_toml(f"{garbage_receiver}?token={TOKEN}&team=ops-4411")
            + '[sinks.retry]\nschedule = ["1h"]\n',
            engine_extra=f'log_format = "{log_format}"',
        )
        if log_format == "text":
            seeded = run_cli("run", "--once", cwd=workdir, env=cli_env)
            assert seeded.returncode == 0, seeded.stderr
            outputs += [seeded.stdout, seeded.stderr]
        simulator.sim.add_lead()
        once = run_cli("run", "--once", cwd=workdir, env=cli_env)
        assert once.returncode == 0, once.stderr
        assert "1 attempted, 0 delivered, 1 to retry later" in once.stdout
        assert "delivery.retry" in once.stderr
        outputs += [once.stdout, once.stderr]
    listed = run_cli("events", "--json", cwd=workdir, env=cli_env)
    deliveries = [d for e in json.loads(listed.stdout) for d in e["deliveries"]]
    assert len(deliveries) == 2
    for delivery in deliveries:  # still recorded as a failed attempt, saying why
        assert delivery["status"] == "failed"
        assert delivery["attempts"] == 1
        # one sentence by host and port: the URL, and so its token, is not quoted at all
        assert delivery["last_error"].startswith("invalid HTTP answer from 127.0.0.1:")
        assert "token" not in delivery["last_error"]
    events = run_cli("events", cwd=workdir, env=cli_env)
    assert "crm: failed (1 attempt, last: invalid HTTP answer from 127.0.0.1:" in events.stdout
    status = run_cli("status", cwd=workdir, env=cli_env)
    status_json = run_cli("status", "--json", cwd=workdir, env=cli_env)
    sinks = run_cli("sinks", cwd=workdir, env=cli_env)
    written = everything_written(
        workdir,
        *outputs,
        listed.stdout,
        events.stdout,
        status.stdout,
        status_json.stdout,
        sinks.stdout,
    )
    assert TOKEN not in written
    assert "ops-4411" not in written
    assert "\x1b" not in events.stdout + status.stdout


# ----------------------------------------------------------------- untrusted text


HOSTILE_KEY = "lead-1\n2026-01-01T00:00:00.000000Z ERROR forged\x1b]0;pwned\x07\x1b[2J"
HOSTILE_KEY_SHOWN = r"lead-1\n2026-01-01T00:00:00.000000Z ERROR forged\x1b]0;pwned\x07\x1b[2J"
HOSTILE_TYPE = "text/html\x1b]2:pwned\x07\x1b[2J\u202eevil"
HOSTILE_TYPE_SHOWN = r"text/html\x1b]2:pwned\x07\x1b[2J\u202eevil"
RAW = ("\x1b", "\x07", "\u202e")


def assert_no_raw_controls(text: str) -> None:
    for char in RAW:
        assert char not in text, f"raw {char!r} in {text!r}"


def test_untrusted_text_is_escaped_in_text_output_and_exact_in_json(
    simulator: SimulatorThread, write_config: ConfigWriter, workdir: Path, cli_env: dict[str, str]
) -> None:
    sim = simulator.sim
    with Receiver() as crm:
        write_config(base_url=simulator.base_url, sinks=sink_toml(crm.url))
        seeded = run_cli("run", "--once", cwd=workdir, env=cli_env)
        assert seeded.returncode == 0, seeded.stderr
        # An item whose key forges a log line, sets the window title and clears the screen.
        body = orjson.dumps([{"id": HOSTILE_KEY, "first_name": "Mallory"}])
        sim.inject(Fault(status=200, body=body, paths=LEADS))
        fired = run_cli("run", "--once", cwd=workdir, env=cli_env)
        assert fired.returncode == 0, fired.stderr
        assert [r.json()["data"]["id"] for r in crm.wait_for(1)] == [HOSTILE_KEY]  # type: ignore[index]
        # Then an API whose content-type header holds control characters.
        answer = (
            f"HTTP/1.1 200 OK\r\ncontent-type: {HOSTILE_TYPE}\r\ncontent-length: 6\r\n"
            "connection: close\r\n\r\n<html>"
        ).encode()
        with raw_server(answer) as hostile_api:
            write_config(base_url=hostile_api, sinks=sink_toml(crm.url))
            failed = run_cli("run", "--once", cwd=workdir, env=cli_env)
        assert failed.returncode == 1
    assert f"is not valid JSON ({HOSTILE_TYPE_SHOWN})" in failed.stdout
    assert f"is not valid JSON ({HOSTILE_TYPE_SHOWN})" in failed.stderr  # the text log

    events = run_cli("events", cwd=workdir, env=cli_env)
    (line,) = events.stdout.splitlines()  # one event, one line
    assert f"key={HOSTILE_KEY_SHOWN}  crm: delivered" in line
    status = run_cli("status", cwd=workdir, env=cli_env)
    assert "last error: account 'acme', trigger 'leads': GET " in status.stdout
    assert f"({HOSTILE_TYPE_SHOWN})" in status.stdout
    triggers = run_cli("triggers", cwd=workdir, env=cli_env)
    for shown in (seeded, fired, failed, events, status, triggers):
        assert_no_raw_controls(shown.stdout + shown.stderr)
    for log in (seeded.stderr, fired.stderr, failed.stderr):
        for log_line in log.splitlines():  # no raw newline inside a log line
            assert LOG_LINE.match(log_line), log_line

    # JSON keeps the exact text.
    listed = json.loads(run_cli("events", "--json", cwd=workdir, env=cli_env).stdout)
    assert [e["key"] for e in listed] == [HOSTILE_KEY]
    keyed = json.loads(
        run_cli("events", "--json", "--key", HOSTILE_KEY, cwd=workdir, env=cli_env).stdout
    )
    assert [e["key"] for e in keyed] == [HOSTILE_KEY]
    status_json = json.loads(run_cli("status", "--json", cwd=workdir, env=cli_env).stdout)
    (leads,) = [t for t in status_json["triggers"] if t["trigger"] == "leads"]
    assert f"is not valid JSON ({HOSTILE_TYPE})" in leads["last_error"]
