"""End-to-end helpers: the real CLI in a subprocess, the simulator, a real receiver."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from trigger_engine.sandbox import Simulator, SimulatorThread

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
API_KEY = "sim-key-5f3a9c"


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trigger_engine", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def spawn_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "trigger_engine", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def toml_config(
    *,
    base_url: str,
    sinks: str,
    database: str = "sqlite:///te.db",
    interval: str = "5m",
    extra_triggers: str = "",
    api_key: str = "${ALFRED_API_KEY}",
    engine_extra: str = "",
) -> str:
    return f"""
[engine]
database = "{database}"
{engine_extra}

[source]
base_url = "{base_url}"
timeout = "5s"

[[accounts]]
name = "acme"
api_key = "{api_key}"

[triggers.leads]
interval = "{interval}"

[triggers.connections]
interval = "{interval}"

[triggers.campaigns]
interval = "{interval}"
{extra_triggers}
{sinks}
"""


@pytest.fixture
def simulator() -> Iterator[SimulatorThread]:
    with SimulatorThread(Simulator(api_key=API_KEY, seed=7, initial=3)) as server:
        yield server


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


ConfigWriter = Callable[..., Path]


@pytest.fixture
def write_config(workdir: Path) -> ConfigWriter:
    def write(**kwargs: str) -> Path:
        path = workdir / "trigger-engine.toml"
        path.write_text(toml_config(**kwargs))
        return path

    return write


@pytest.fixture
def cli_env() -> dict[str, str]:
    return {"ALFRED_API_KEY": API_KEY, "TRIGGER_ENGINE_CONFIG": ""}
