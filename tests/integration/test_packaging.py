"""A built wheel is a working program: the migrations ship inside it and are found
from any working directory."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("trigger_engine-*.whl")
    return built


def test_the_wheel_carries_the_migrations(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "trigger_engine/migrations/env.py" in names
    assert "trigger_engine/migrations/script.py.mako" in names
    versions = [n for n in names if n.startswith("trigger_engine/migrations/versions/0")]
    assert versions, sorted(names)


def test_the_wheel_carries_the_console_s_static_files(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "trigger_engine/runtime/console/static/console.css" in names
    assert "trigger_engine/runtime/console/static/console.js" in names


def test_the_installed_wheel_migrates_from_another_directory(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "te.toml").write_text(
        '[engine]\ndatabase = "sqlite:///state/te.db"\n'
        '[[accounts]]\nname = "acme"\napi_key = "k"\n[triggers.leads]\n'
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = subprocess.run(
        [sys.executable, "-c", "import trigger_engine; print(trigger_engine.__file__)"],
        cwd=elsewhere,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    assert probe.stdout.startswith(str(site))
    done = subprocess.run(
        [sys.executable, "-m", "trigger_engine", "db", "upgrade", "-c", "te.toml"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert (elsewhere / "state" / "te.db").is_file()
