"""Bad input gets one clear sentence and the right exit code; secrets never show."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import API_KEY, ConfigWriter, run_cli
from tests.waiting import free_port
from trigger_engine.sandbox import SimulatorThread


def one_sentence(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_missing_config_file_names_it(tmp_path: Path) -> None:
    done = run_cli("run", "--once", cwd=tmp_path, env={"TRIGGER_ENGINE_CONFIG": ""})
    assert done.returncode == 2
    line = one_sentence(done.stderr)
    assert str(tmp_path / "trigger-engine.toml") in line and "not found" in line


def test_config_from_the_environment_variable(tmp_path: Path) -> None:
    done = run_cli("check", cwd=tmp_path, env={"TRIGGER_ENGINE_CONFIG": str(tmp_path / "x.toml")})
    assert done.returncode == 2
    assert "x.toml" in one_sentence(done.stderr)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda t: t.replace('timeout = "5s"', 'timeout = "5s"\ntimeuot = 3'),
            "line 9: unknown key 'source.timeuot'",
        ),
        (lambda t: t.replace('interval = "5m"', 'interval = "soon"', 1), "triggers.leads.interval"),
        (lambda t: t.replace("${ALFRED_API_KEY}", "${NOT_SET_ANYWHERE}"), "NOT_SET_ANYWHERE"),
        (lambda t: t.replace("[engine]", "[engine"), "invalid TOML"),
    ],
    ids=["unknown-key", "bad-duration", "unset-variable", "syntax"],
)
def test_config_errors_exit_2_with_one_sentence(
    write_config: ConfigWriter,
    workdir: Path,
    cli_env: dict[str, str],
    mutate,
    expected: str,  # type: ignore[no-untyped-def]
) -> None:
    path = write_config(base_url="http://127.0.0.1:9", sinks="")
    path.write_text(mutate(path.read_text()))
    done = run_cli("run", "--once", cwd=workdir, env=cli_env)
    assert done.returncode == 2
    line = one_sentence(done.stderr)
    assert expected in line and "trigger-engine.toml" in line


def test_postgresql_without_psycopg_exits_2_naming_the_extra(
    write_config: ConfigWriter, workdir: Path, cli_env: dict[str, str]
) -> None:
    path = write_config(
        base_url="http://127.0.0.1:9",
        sinks="",
        database="postgresql+psycopg://te:pw-not-shown@127.0.0.1:9/te",
    )
    code = (
        "import sys; sys.modules['psycopg'] = None; from trigger_engine.cli.main import main; "
        "raise SystemExit(main(['check', '-c', sys.argv[1]]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        cwd=workdir,
        env={**os.environ, **cli_env},
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 2, done.stderr
    line = one_sentence(done.stderr)
    assert line.endswith(
        f"{path}: line 3: engine.database: PostgreSQL needs the psycopg driver, which is not "
        "installed: pip install 'trigger-engine[postgres]'"
    )
    assert "pw-not-shown" not in done.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    done = run_cli("--debug", "check", cwd=tmp_path, env={"TRIGGER_ENGINE_CONFIG": ""})
    assert done.returncode == 2
    assert "Traceback" in done.stderr


@pytest.mark.parametrize("argv", [["frobnicate"], ["run", "--twice"], [], ["db"]])
def test_bad_usage_exits_2(tmp_path: Path, argv: list[str]) -> None:
    done = run_cli(*argv, cwd=tmp_path)
    assert done.returncode == 2
    assert "see 'trigger-engine" in one_sentence(done.stderr)


def test_check_passes_with_a_good_key_and_names_the_account_with_a_bad_one(
    simulator: SimulatorThread, write_config: ConfigWriter, workdir: Path, cli_env: dict[str, str]
) -> None:
    write_config(base_url=simulator.base_url, sinks="")
    good = run_cli("check", cwd=workdir, env=cli_env)
    assert good.returncode == 0, good.stderr
    assert "account 'acme': ok" in good.stdout
    bad = run_cli("check", cwd=workdir, env={**cli_env, "ALFRED_API_KEY": "wrong-key-31337"})
    assert bad.returncode == 1
    assert "account 'acme': API key refused" in bad.stdout
    assert "api_key=***" in bad.stdout
    assert "wrong-key-31337" not in bad.stdout + bad.stderr


def test_an_unreachable_upstream_fails_the_run_without_leaking_the_key(
    write_config: ConfigWriter, workdir: Path, cli_env: dict[str, str]
) -> None:
    write_config(base_url=f"http://127.0.0.1:{free_port()}", sinks="")
    done = run_cli("run", "--once", cwd=workdir, env=cli_env)
    assert done.returncode == 1
    assert "acme/leads: failed:" in done.stdout and "connection failed" in done.stdout
    assert API_KEY not in done.stdout + done.stderr


def test_an_unreachable_database_is_a_runtime_failure(
    write_config: ConfigWriter, workdir: Path, cli_env: dict[str, str]
) -> None:
    write_config(
        base_url="http://127.0.0.1:9",
        sinks="",
        database=f"postgresql+psycopg://u:pw-secret@127.0.0.1:{free_port()}/x?connect_timeout=2",
    )
    done = run_cli("db", "upgrade", cwd=workdir, env=cli_env)
    assert done.returncode == 1
    line = one_sentence(done.stderr)
    assert line.startswith("trigger-engine: error: cannot use the database")
    assert "pw-secret" not in line
