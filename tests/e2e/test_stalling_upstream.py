"""The real CLI against an upstream that never finishes answering (tests/stalling.py):
``run --once`` and ``check`` end at ``source.timeout``, exit 1, and say so in one sentence
naming the account and the trigger. They used to run until the upstream hung up."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.conftest import run_cli
from tests.stalling import StallingServer

TIMEOUT = 2  # source.timeout, seconds
STARTUP = 10  # what starting the CLI (imports, migrations) may take on a loaded machine


def config(workdir: Path, base_url: str) -> None:
    (workdir / "trigger-engine.toml").write_text(
        f"""
[engine]
database = "sqlite:///te.db"

[source]
base_url = "{base_url}"
timeout = "{TIMEOUT}s"

[[accounts]]
name = "acme"
api_key = "${{ALFRED_API_KEY}}"

[triggers.leads]
interval = "5m"
"""
    )


@pytest.mark.parametrize(("mode", "every"), [("drip-headers", 1.0), ("continue", 0.2)])
@pytest.mark.parametrize("command", [("run", "--once"), ("check",)], ids=["run-once", "check"])
def test_the_cli_ends_at_the_timeout_against_a_stalling_upstream(
    command: tuple[str, ...],
    mode: str,
    every: float,
    workdir: Path,
    cli_env: dict[str, str],
) -> None:
    with StallingServer(mode, every=every) as upstream:
        config(workdir, upstream.url)
        started = time.monotonic()
        done = run_cli(*command, cwd=workdir, env=cli_env, timeout=TIMEOUT + STARTUP)
        elapsed = time.monotonic() - started
        assert upstream.requests.is_set()
    assert done.returncode == 1, (done.stdout, done.stderr)
    sentence = (
        f"account 'acme', trigger 'leads': GET {upstream.url}/leads?api_key=***: "
        f"timed out after {TIMEOUT}s"
    )
    assert sentence in done.stdout, done.stdout
    assert TIMEOUT <= elapsed < TIMEOUT + STARTUP
    print(f"\n{' '.join(command)} against {mode}: exit 1 after {elapsed:.2f}s")
