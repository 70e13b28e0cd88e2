"""What a command loads before it answers: start-up is part of the cost of every command
cron or an operator runs (issue 16). Structural, not timed: the packages in ``sys.modules``
of the process that ran the command, through the same ``main`` as ``trigger-engine``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ConfigWriter, run_cli
from trigger_engine.sandbox import SimulatorThread

# What the parser alone never needs: the database, the HTTP clients, validation, the
# scheduler, the terminal display.
HEAVY = ("sqlalchemy", "alembic", "aiohttp", "httpx", "pydantic", "apscheduler", "rich")
# What the parser never needs of the engine and the standard library: the value objects
# (types.py: 25 dataclasses, ~0.5 ms each to create), ``dataclasses`` itself (it imports
# ``inspect``, ``ast`` and ``dis``), the JSON encoder of the logs, sockets.
PARSER_NEVER = ("trigger_engine.types", "dataclasses", "inspect", "orjson", "socket", "select")
# What a command that only reads the database never needs.
NETWORK_AND_SCHEDULE = ("aiohttp", "httpx", "apscheduler", "alembic", "rich")
# What ``run --once`` never needs: it schedules nothing and serves nothing (runtime/jobs.py
# and the HTTP server are the serving daemon's).
SERVING_ONLY = (
    "apscheduler",
    "aiohttp.web",
    "trigger_engine.runtime.jobs",
    "trigger_engine.ops.http_api",
)

_RUN = """
import gc, json, sys
from trigger_engine.cli.main import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
report = {
    "code": code,
    "packages": sorted({name.split(".")[0] for name in sys.modules}),
    "modules": sorted(sys.modules),
    "gc_enabled": gc.isenabled(),
    "frozen": gc.get_freeze_count(),
}
sys.stderr.write("\\n" + json.dumps(report) + "\\n")
"""


def packages_loaded(*args: str, cwd: Path, env: dict[str, str] | None = None) -> set[str]:
    """The top-level packages imported by the time ``trigger-engine ARGS`` returned."""
    return set(cli_report(*args, cwd=cwd, env=env)["packages"])


def cli_report(*args: str, cwd: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """What the process that ran ``trigger-engine ARGS`` held when it returned: its exit
    code, the packages and modules imported, and the garbage collector's state."""
    done = subprocess.run(
        [sys.executable, "-c", _RUN, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=90,
    )
    report: dict[str, Any] = json.loads(done.stderr.strip().splitlines()[-1])
    assert report["code"] == 0, done.stderr
    return report


@pytest.mark.parametrize(
    "args",
    [("--help",), ("--version",), ("run", "--help"), ("events", "--help")],
    ids=" ".join,
)
def test_the_parser_loads_no_heavy_library(args: tuple[str, ...], tmp_path: Path) -> None:
    report = cli_report(*args, cwd=tmp_path)
    loaded = set(report["packages"])
    assert "trigger_engine" in loaded
    assert sorted(loaded.intersection(HEAVY)) == []
    modules = set(report["modules"])
    assert "trigger_engine.states" in modules  # the statuses the options name
    assert sorted(modules.intersection(PARSER_NEVER)) == []


@pytest.mark.parametrize("command", ["status", "events"])
def test_reading_the_database_loads_no_http_client_or_scheduler(
    command: str, write_config: ConfigWriter, workdir: Path, cli_env: dict[str, str]
) -> None:
    write_config(base_url="http://127.0.0.1:9", sinks="")
    assert run_cli("db", "upgrade", cwd=workdir, env=cli_env).returncode == 0
    loaded = packages_loaded(command, cwd=workdir, env=cli_env)
    assert "sqlalchemy" in loaded
    assert sorted(loaded.intersection(NETWORK_AND_SCHEDULE)) == []


def test_start_up_is_frozen_and_the_collector_back_on(
    write_config: ConfigWriter, workdir: Path, cli_env: dict[str, str]
) -> None:
    """The engine's modules are imported with the collector paused and frozen after
    (cli/startup.py): the collector runs again for the command, and
    what start-up made is in the permanent generation, which no collection walks."""
    write_config(base_url="http://127.0.0.1:9", sinks="")
    assert run_cli("db", "upgrade", cwd=workdir, env=cli_env).returncode == 0
    report = cli_report("status", cwd=workdir, env=cli_env)
    assert report["gc_enabled"] is True
    assert report["frozen"] > 10_000  # SQLAlchemy's and pydantic's objects among them


def test_run_once_loads_no_scheduler_or_http_server(
    simulator: SimulatorThread, write_config: ConfigWriter, workdir: Path, cli_env: dict[str, str]
) -> None:
    write_config(base_url=simulator.base_url, sinks="")
    report = cli_report("run", "--once", cwd=workdir, env=cli_env)
    modules = set(report["modules"])
    assert "trigger_engine.runtime.daemon" in modules
    assert report["gc_enabled"] is True  # after the daemon's imports too (cli/startup.py)
    assert sorted(m for m in SERVING_ONLY if m in modules or m in report["packages"]) == []
