"""What a command loads before it answers: start-up is part of the cost of every command
cron or an operator runs (issue 16). Structural, not timed: the packages in ``sys.modules``
of the process that ran the command, through the same ``main`` as ``trigger-engine``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import ConfigWriter, run_cli

# What the parser alone never needs: the database, the HTTP clients, validation, the
# scheduler, the terminal display.
HEAVY = ("sqlalchemy", "alembic", "aiohttp", "httpx", "pydantic", "apscheduler", "rich")
# What a command that only reads the database never needs.
NETWORK_AND_SCHEDULE = ("aiohttp", "httpx", "apscheduler", "alembic", "rich")

_RUN = """
import json, sys
from trigger_engine.cli.main import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
packages = sorted({name.split(".")[0] for name in sys.modules})
sys.stderr.write("\\n" + json.dumps({"code": code, "packages": packages}) + "\\n")
"""


def packages_loaded(*args: str, cwd: Path, env: dict[str, str] | None = None) -> set[str]:
    """The top-level packages imported by the time ``trigger-engine ARGS`` returned."""
    done = subprocess.run(
        [sys.executable, "-c", _RUN, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=90,
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report["code"] == 0, done.stderr
    return set(report["packages"])


@pytest.mark.parametrize(
    "args",
    [("--help",), ("--version",), ("run", "--help"), ("events", "--help")],
    ids=" ".join,
)
def test_the_parser_loads_no_heavy_library(args: tuple[str, ...], tmp_path: Path) -> None:
    loaded = packages_loaded(*args, cwd=tmp_path)
    assert "trigger_engine" in loaded
    assert sorted(loaded.intersection(HEAVY)) == []


@pytest.mark.parametrize("command", ["status", "events"])
def test_reading_the_database_loads_no_http_client_or_scheduler(
    command: str, write_config: ConfigWriter, workdir: Path, cli_env: dict[str, str]
) -> None:
    write_config(base_url="http://127.0.0.1:9", sinks="")
    assert run_cli("db", "upgrade", cwd=workdir, env=cli_env).returncode == 0
    loaded = packages_loaded(command, cwd=workdir, env=cli_env)
    assert "sqlalchemy" in loaded
    assert sorted(loaded.intersection(NETWORK_AND_SCHEDULE)) == []
