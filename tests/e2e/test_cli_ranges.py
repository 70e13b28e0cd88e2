"""Values out of range, through the real CLI: exit 2 and one sentence naming the key or
option and its range, never an OverflowError, a RecursionError or a missing module later."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import ConfigWriter, run_cli, toml_config
from tests.e2e.test_cli_errors import one_sentence
from trigger_engine.sandbox import SimulatorThread

Mutation = Callable[[str], str]

SINK = '[[sinks]]\nname = "crm"\nurl = "http://127.0.0.1:9/hook"\n'


@pytest.mark.parametrize(
    ("argv", "mutate", "expected"),
    [
        (
            ["run", "--once"],
            lambda t: t.replace('interval = "5m"', 'interval = "99999999999d"', 1),
            "line 15: triggers.leads.interval: must be a duration from 100ms to 30d",
        ),
        (
            ["run", "--once"],
            lambda t: t.replace('interval = "5m"', "interval = 1e308", 1),
            "line 15: triggers.leads.interval: must be a duration from 100ms to 30d",
        ),
        (
            ["check"],
            lambda t: t.replace('timeout = "5s"', "timeout = 1e308"),
            "line 8: source.timeout: must be a duration greater than zero and at most 1h",
        ),
        (
            ["run", "--once"],
            lambda t: t.replace("[engine]", '[engine]\nretention = "99999999999d"'),
            "line 3: engine.retention: must be a duration greater than zero and at most 3650d",
        ),
        (
            ["status"],
            lambda t: t.replace('"sqlite:///te.db"', '"mysql://te:pw-not-shown@db/te"'),
            'line 3: engine.database: only SQLite ("sqlite:///FILE") and PostgreSQL '
            "(\"postgresql+psycopg://USER@HOST/DBNAME\") are supported, not 'mysql'",
        ),
        (
            ["db", "upgrade"],
            lambda t: t.replace('"sqlite:///te.db"', '"nosuchdb://x"'),
            "line 3: engine.database: only SQLite",
        ),
        (
            ["check"],
            lambda t: t + "x = " + "[" * 5000 + "]" * 5000 + "\n",
            "invalid TOML: arrays or tables are nested more than 32 levels deep",
        ),
        (
            ["check"],
            lambda t: t + "[engine." + ".".join(["deep"] * 5000) + "]\n",
            "engine.deep: arrays or tables are nested more than 32 levels deep",
        ),
        (
            ["check"],
            lambda t: t.replace('name = "acme"', f'name = "{"a" * 300}"'),
            "line 11: accounts[0].name: must be at most 200 characters long (it has 300)",
        ),
        (
            ["check"],
            lambda t: t + SINK.replace('"crm"', f'"{"s" * 300}"'),
            "sinks[0].name: must be at most 200 characters long (it has 300)",
        ),
    ],
    ids=[
        "interval-99999999999d",
        "interval-1e308",
        "timeout-1e308",
        "retention-99999999999d",
        "mysql",
        "nosuchdb",
        "arrays-5000-deep",
        "tables-5000-deep",
        "account-name-300",
        "sink-name-300",
    ],
)
def test_config_out_of_range_exits_2_with_one_sentence(
    write_config: ConfigWriter,
    workdir: Path,
    cli_env: dict[str, str],
    argv: list[str],
    mutate: Mutation,
    expected: str,
) -> None:
    path = write_config(base_url="http://127.0.0.1:9", sinks="")
    path.write_text(mutate(path.read_text()))
    done = run_cli(*argv, cwd=workdir, env=cli_env)
    assert done.returncode == 2, done.stderr
    line = one_sentence(done.stderr)
    assert line.startswith(f"trigger-engine: error: {path}: "), line
    assert expected in line, line
    assert "pw-not-shown" not in line


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["events", "--limit", "100000000000000000000000"],
            "argument --limit: '100000000000000000000000' is outside 1-1000000",
        ),
        (
            ["events", "--since", "99999999999d"],
            "--since '99999999999d' reaches back before the year 1: give a shorter duration "
            "or an ISO 8601 time",
        ),
        (
            ["replay", "--since", "1h", "--until", "0001-01-01T00:00:00+01:00"],
            "--until '0001-01-01T00:00:00+01:00' is outside the times it can name",
        ),
        (
            ["events", "--account", "a" * 300],
            "is longer than 200 characters, the most an account name may have",
        ),
    ],
    ids=["limit", "since-99999999999d", "until-before-year-1", "account-300"],
)
def test_options_out_of_range_exit_2_with_one_sentence(
    write_config: ConfigWriter,
    workdir: Path,
    cli_env: dict[str, str],
    argv: list[str],
    expected: str,
) -> None:
    write_config(base_url="http://127.0.0.1:9", sinks="")
    done = run_cli(*argv, cwd=workdir, env=cli_env)
    assert done.returncode == 2, done.stderr
    line = one_sentence(done.stderr)
    assert line.startswith("trigger-engine: error: ") and expected in line, line


def test_a_limit_and_times_at_the_ends_of_their_ranges_are_accepted(
    write_config: ConfigWriter, workdir: Path, cli_env: dict[str, str]
) -> None:
    write_config(base_url="http://127.0.0.1:9", sinks="")
    done = run_cli(
        "events",
        "--limit",
        "1000000",
        "--since",
        "0001-01-01",
        "--until",
        "9999-12-31T23:59:59Z",
        "--json",
        cwd=workdir,
        env=cli_env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.postgres
def test_the_longest_names_and_a_plain_postgresql_url_work_on_postgresql(
    simulator: SimulatorThread, workdir: Path, cli_env: dict[str, str], pg_url: str
) -> None:
    """PostgreSQL enforces the column sizes: names of the longest allowed length are stored,
    and ``postgresql://`` (without a driver) runs on psycopg."""
    account, sink = "a" * 200, "s" * 200
    text = toml_config(
        base_url=simulator.base_url,
        sinks=SINK.replace('"crm"', f'"{sink}"'),
        database="postgresql://" + pg_url.split("://", 1)[1],
    )
    text = text.replace('name = "acme"', f'name = "{account}"')
    text = text.replace("[triggers.leads]", '[triggers.leads]\non_first_poll = "emit"')
    (workdir / "trigger-engine.toml").write_text(text)
    done = run_cli("run", "--once", cwd=workdir, env=cli_env)
    assert done.returncode == 0, done.stderr
    listed = run_cli(
        "events",
        "--account",
        account,
        "--since",
        "0001-01-01",
        "--until",
        "9999-12-31T23:59:59Z",
        "--json",
        cwd=workdir,
        env=cli_env,
    )
    assert listed.returncode == 0, listed.stderr
    events = json.loads(listed.stdout)
    assert events and {e["account"] for e in events} == {account}
    assert {d["sink"] for e in events for d in e["deliveries"]} == {sink}
