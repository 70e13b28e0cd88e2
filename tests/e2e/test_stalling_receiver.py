"""The real CLI delivering to a receiver that never finishes answering (tests/stalling.py):
the attempt is cut at the sink's ``timeout`` and recorded as a failed attempt, retried
later. aiohttp's ``ClientTimeout(total=...)`` already did so; this guards it."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from tests.e2e.conftest import ConfigWriter, run_cli
from tests.stalling import StallingServer
from trigger_engine.sandbox import SimulatorThread

SINK_TIMEOUT = 1  # seconds
STARTUP = 10  # what starting the CLI (imports, migrations) may take on a loaded machine


@pytest.mark.parametrize(("mode", "every"), [("drip-headers", 0.5), ("continue", 0.2)])
def test_a_stalling_receiver_is_cut_at_the_sink_timeout_and_the_attempt_recorded(
    mode: str,
    every: float,
    simulator: SimulatorThread,
    write_config: ConfigWriter,
    workdir: Path,
    cli_env: dict[str, str],
) -> None:
    with StallingServer(mode, every=every) as crm:
        write_config(
            base_url=simulator.base_url,
            sinks=f'[[sinks]]\nname = "crm"\nurl = "{crm.url}"\ntimeout = "{SINK_TIMEOUT}s"\n',
        )
        seeded = run_cli("run", "--once", cwd=workdir, env=cli_env)
        assert seeded.returncode == 0, seeded.stderr
        simulator.sim.add_lead()
        started = time.monotonic()
        done = run_cli("run", "--once", cwd=workdir, env=cli_env, timeout=SINK_TIMEOUT + STARTUP)
        elapsed = time.monotonic() - started
        assert crm.requests.is_set()
    assert done.returncode == 0, done.stderr  # a failed delivery is retried, not an error
    assert done.stdout.splitlines()[-1] == (
        "deliveries: 1 attempted, 0 delivered, 1 to retry later, 0 dead"
    )
    assert SINK_TIMEOUT <= elapsed < SINK_TIMEOUT + STARTUP
    listed = run_cli("events", "--json", cwd=workdir, env=cli_env)
    (event,) = orjson.loads(listed.stdout)
    (delivery,) = event["deliveries"]
    assert (delivery["status"], delivery["attempts"]) == ("failed", 1)
    assert delivery["last_error"] == f"timed out after {SINK_TIMEOUT}s"
    print(f"\nrun --once delivering to {mode}: cut and recorded in {elapsed:.2f}s")
