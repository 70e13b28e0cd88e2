"""The real CLI against a simulator that fails in every way an API can: nothing fires
falsely, nothing is lost once the API recovers, and the API key appears nowhere."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import API_KEY, ConfigWriter, run_cli
from tests.receiver import Receiver
from trigger_engine.sandbox import Fault, SimulatorThread

LEADS = ("/leads",)

FAULTS = {
    "500": Fault(status=500, paths=LEADS),
    "502": Fault(status=502, paths=LEADS),
    "429-retry-after": Fault(status=429, retry_after="120", paths=LEADS),
    "html-200": Fault(
        status=200,
        body=b"<html><body>Maintenance</body></html>",
        content_type="text/html",
        paths=LEADS,
    ),
    "truncated-json": Fault(
        status=200, body=b'[{"id": "ACoAAtruncated", "person": {"na', paths=LEADS
    ),
    "object-not-list": Fault(status=200, body=b'{"leads": [{"id": "x"}]}', paths=LEADS),
    "401": Fault(status=401, paths=LEADS),
    "slow": Fault(status=200, delay=8.0, paths=LEADS),  # beyond the 5 s source timeout
}


def everything_written(workdir: Path, *outputs: str) -> str:
    db = b"".join(p.read_bytes() for p in workdir.glob("te.db*"))
    return "\n".join(outputs) + db.decode("latin-1")


@pytest.mark.parametrize("name", list(FAULTS))
def test_a_failing_poll_fires_nothing_and_loses_nothing(
    name: str,
    simulator: SimulatorThread,
    write_config: ConfigWriter,
    workdir: Path,
    cli_env: dict[str, str],
) -> None:
    sim = simulator.sim
    with Receiver() as crm:
        write_config(
            base_url=simulator.base_url, sinks=f'[[sinks]]\nname = "crm"\nurl = "{crm.url}"\n'
        )
        seeded = run_cli("run", "--once", cwd=workdir, env=cli_env)
        assert seeded.returncode == 0, seeded.stderr
        lead = sim.add_lead()
        sim.inject(FAULTS[name])
        failed = run_cli("run", "--once", cwd=workdir, env=cli_env)
        assert failed.returncode == 1
        assert "acme/leads: failed:" in failed.stdout
        assert "api_key=***" in failed.stdout
        assert crm.requests == []  # nothing fired falsely
        recovered = run_cli("run", "--once", cwd=workdir, env=cli_env)
        assert recovered.returncode == 0, recovered.stdout + recovered.stderr
        assert [r.json()["data"]["id"] for r in crm.requests] == [lead["id"]]  # type: ignore[index]
        again = run_cli("run", "--once", cwd=workdir, env=cli_env)
        assert len(crm.requests) == 1
        status = run_cli("status", cwd=workdir, env=cli_env)
    written = everything_written(
        workdir, *(p.stdout + p.stderr for p in (seeded, failed, recovered, again, status))
    )
    assert API_KEY not in written


@pytest.fixture
def resetting_server() -> Iterator[str]:
    """Accepts connections and closes them at once, without answering."""
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
            conn.recv(65536)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        server.close()


def test_a_connection_reset_is_a_transient_failure(
    resetting_server: str, write_config: ConfigWriter, workdir: Path, cli_env: dict[str, str]
) -> None:
    write_config(base_url=resetting_server, sinks="")
    done = run_cli("run", "--once", cwd=workdir, env=cli_env)
    assert done.returncode == 1
    assert "connection failed" in done.stdout
    status = run_cli("status", "--json", cwd=workdir, env=cli_env)
    assert '"last_outcome": "transient"' in status.stdout
    assert API_KEY not in everything_written(workdir, done.stdout, done.stderr, status.stdout)


def test_two_accounts_one_bad_key_the_good_one_keeps_forwarding(
    simulator: SimulatorThread, workdir: Path, cli_env: dict[str, str]
) -> None:
    with Receiver() as crm:
        (workdir / "trigger-engine.toml").write_text(f"""
[engine]
database = "sqlite:///te.db"
[source]
base_url = "{simulator.base_url}"
timeout = "5s"
[[accounts]]
name = "good"
api_key = "${{ALFRED_API_KEY}}"
[[accounts]]
name = "bad"
api_key = "revoked-key-0042"
[triggers.leads]
[[sinks]]
name = "crm"
url = "{crm.url}"
""")
        first = run_cli("run", "--once", cwd=workdir, env=cli_env)
        assert first.returncode == 1
        assert "good/leads: 3 items, first poll" in first.stdout
        assert "bad/leads: failed:" in first.stdout and "'bad' was refused" in first.stdout
        lead = simulator.sim.add_lead()
        second = run_cli("run", "--once", cwd=workdir, env=cli_env)
        assert "good/leads: 4 items, 1 new" in second.stdout
        assert [r.json()["account"] for r in crm.requests] == ["good"]  # type: ignore[index]
        assert crm.requests[0].json()["data"]["id"] == lead["id"]  # type: ignore[index]
        good_only = run_cli("events", "--account", "good", "--json", cwd=workdir, env=cli_env)
        assert lead["id"] in good_only.stdout
        bad_only = run_cli("events", "--account", "bad", "--json", cwd=workdir, env=cli_env)
        assert bad_only.stdout.strip() == "[]"
        status = run_cli("triggers", cwd=workdir, env=cli_env)
        assert "good/leads: active" in status.stdout
        assert "bad/leads: backing off" in status.stdout
    written = everything_written(workdir, first.stdout, first.stderr, second.stdout, status.stdout)
    assert "revoked-key-0042" not in written and API_KEY not in written
