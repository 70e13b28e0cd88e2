"""Every duration, count, limit and name has a range: just inside loads, just outside is one
sentence naming the key and the range (issue 12: hostile input never crashes later)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_config import (
    ENV,
    MINIMAL,
    REPO_ROOT,
    base_dict,
    load_error,
    load_text,
    write,
)
from trigger_engine.config import config_from_dict, load_config
from trigger_engine.core import durations
from trigger_engine.core.durations import parse_duration, show
from trigger_engine.db import schema
from trigger_engine.errors import ConfigError

# The longest names the database holds (trigger_engine/states.py; tested against the schema
# below). Spelled out here so that these tests say what they expect.
ACCOUNT_NAME_MAX = 200
TRIGGER_NAME_MAX = 100
SINK_NAME_MAX = 200
EVENT_TYPE_MAX = 100

SINK = "[[sinks]]\nname = 'crm'\nurl = 'https://hooks.example.com/x'\n"


def engine(line: str) -> str:
    return f"[engine]\n{line}\n" + MINIMAL


def source(line: str) -> str:
    return f"[source]\n{line}\n" + MINIMAL


def trigger(line: str) -> str:
    return MINIMAL + line + "\n"


def sink(line: str) -> str:
    return MINIMAL + SINK + line + "\n"


def retry(steps: str) -> str:
    return MINIMAL + SINK + f"[sinks.retry]\nschedule = [{steps}]\n"


# --- durations: the range each key accepts

# (build the file, key path, values just inside, values just outside, the range sentence)
DURATION_BOUNDS = [
    (
        lambda v: trigger(f"interval = {v}"),
        "triggers.leads.interval",
        ['"100ms"', '"30d"', "0.1", "2592000"],
        ['"99ms"', '"30d1s"', "2592000.5", '"99999999999d"', "1e308"],
        "must be a duration from 100ms to 30d",
    ),
    (
        lambda v: source(f"timeout = {v}"),
        "source.timeout",
        ['"1ms"', '"1h"', "3600"],
        ['"1h1s"', "3600.5", '"99999999999d"', "1e308"],
        "must be a duration greater than zero and at most 1h",
    ),
    (
        lambda v: sink(f"timeout = {v}"),
        "sinks[0].timeout",
        ['"1ms"', '"1h"'],
        ['"61m"', "1e308"],
        "must be a duration greater than zero and at most 1h",
    ),
    (
        lambda v: engine(f"lease = {v}"),
        "engine.lease",
        ['"1ms"', '"1d"', "86400"],
        ['"1d1s"', "86401", "1e308"],
        "must be a duration greater than zero and at most 1d",
    ),
    (
        lambda v: engine(f"shutdown_grace = {v}"),
        "engine.shutdown_grace",
        ["0", '"1h"'],
        ['"1h1s"', "1e308"],
        "must be a duration of at most 1h",
    ),
    (
        lambda v: engine(f"retention = {v}"),
        "engine.retention",
        ['"1s"', '"3650d"'],
        ['"3651d"', '"99999999999d"', "1e308"],
        "must be a duration greater than zero and at most 3650d",
    ),
    (
        lambda v: trigger(f"pause_after = {v}"),
        "triggers.leads.pause_after",
        ['"1s"', '"365d"'],
        ['"366d"', "1e308"],
        "must be a duration greater than zero and at most 365d",
    ),
    (
        lambda v: retry(v),
        "sinks[0].retry.schedule[0]",
        ['"1ms"', '"7d"'],
        ['"7d1s"', "1e308"],
        "must be a duration greater than zero and at most 7d",
    ),
]


@pytest.mark.parametrize(
    ("build", "key", "inside", "outside", "sentence"),
    DURATION_BOUNDS,
    ids=[b[1] for b in DURATION_BOUNDS],
)
def test_duration_ranges(
    tmp_path: Path,
    build,  # type: ignore[no-untyped-def]
    key: str,
    inside: list[str],
    outside: list[str],
    sentence: str,
) -> None:
    for value in inside:
        load_text(tmp_path, build(value))  # loads
    for value in outside:
        message = load_error(tmp_path, build(value))
        assert message.endswith(f": {key}: {sentence}"), (value, message)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (trigger('interval = "0s"'), "triggers.leads.interval"),
        (source("timeout = 0"), "source.timeout"),
        (engine('lease = "0s"'), "engine.lease"),
        (retry("0"), "sinks[0].retry.schedule[0]"),
    ],
)
def test_zero_keeps_its_sentence(tmp_path: Path, text: str, key: str) -> None:
    assert load_error(tmp_path, text).endswith(f": {key}: must be a duration greater than zero")


def test_a_duration_from_the_environment_is_range_checked_and_not_echoed(tmp_path: Path) -> None:
    message = load_error(
        tmp_path, trigger('interval = "${EVERY}"'), env={**ENV, "EVERY": "99999999999d"}
    )
    assert message.endswith(": triggers.leads.interval: must be a duration from 100ms to 30d")


def test_config_from_dict_checks_ranges_too() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(base_dict(triggers={"leads": {"interval": 1e308}}), env={})
    assert str(info.value) == (
        "invalid configuration: triggers.leads.interval: must be a duration from 100ms to 30d"
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0s"),
        (0.1, "100ms"),
        (1.0, "1s"),
        (90.0, "90s"),
        (3600.0, "1h"),
        (86400.0, "1d"),
        (30 * 86400.0, "30d"),
        (3650 * 86400.0, "3650d"),
        (1.25, "1250ms"),
        (0.0005, "0.0005s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert durations.format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("bounds", "value", "error"),
    [
        ({"high": 60.0}, 60, None),
        ({"high": 60.0}, 0, None),
        ({"high": 60.0}, "61s", "must be a duration of at most 1m"),
        ({"high": 60.0, "positive": True}, 0, "must be a duration greater than zero"),
        ({"high": 60.0, "positive": True}, "1m1s", "greater than zero and at most 1m"),
        ({"low": 1.0, "high": 60.0}, "999ms", "must be a duration from 1s to 1m"),
        ({"low": 1.0, "high": 60.0}, "1s", None),
        ({"high": 60.0}, "fast", "invalid duration 'fast'"),
    ],
)
def test_duration_range_check(bounds: dict[str, Any], value: object, error: str | None) -> None:
    allowed = durations.DurationRange(**bounds)
    if error is None:
        assert allowed.check(value) == parse_duration(value)
    else:
        with pytest.raises(ValueError, match=error):
            allowed.check(value)


# --- counts


@pytest.mark.parametrize(
    ("build", "key", "inside", "outside", "sentence"),
    [
        (
            lambda v: trigger(f"max_new_per_poll = {v}"),
            "triggers.leads.max_new_per_poll",
            ["1", "1_000_000"],
            ["1_000_001", "100000000000000000000000"],
            "must be at most 1000000",
        ),
        (
            lambda v: trigger(f"pause_after_failures = {v}"),
            "triggers.leads.pause_after_failures",
            ["0", "1_000_000"],
            ["1_000_001", "100000000000000000000000"],
            "must be at most 1000000",
        ),
        (
            lambda v: engine(f"poll_workers = {v}"),
            "engine.poll_workers",
            ["256"],
            ["100000000000000000000000"],
            "must be at most 256",
        ),
        (
            lambda v: retry(", ".join(['"1s"'] * int(v))),
            "sinks[0].retry.schedule",
            ["0", "50"],
            ["51", "5000"],
            "must have at most 50 delays",
        ),
    ],
    ids=["max_new_per_poll", "pause_after_failures", "poll_workers", "schedule-length"],
)
def test_count_ranges(
    tmp_path: Path,
    build,  # type: ignore[no-untyped-def]
    key: str,
    inside: list[str],
    outside: list[str],
    sentence: str,
) -> None:
    for value in inside:
        load_text(tmp_path, build(value))
    for value in outside:
        message = load_error(tmp_path, build(value))
        assert f": {key}: {sentence}" in message, (value, message)


# --- names: within the database's column sizes


def test_the_schema_sizes_its_columns_with_the_name_limits() -> None:
    from trigger_engine import states

    names = (states.ACCOUNT_NAME_MAX, states.TRIGGER_NAME_MAX)
    assert names == (ACCOUNT_NAME_MAX, TRIGGER_NAME_MAX)
    assert (states.SINK_NAME_MAX, states.EVENT_TYPE_MAX) == (SINK_NAME_MAX, EVENT_TYPE_MAX)
    assert schema.poll_state.c.account.type.length == ACCOUNT_NAME_MAX == 200
    assert schema.seen_keys.c.account.type.length == ACCOUNT_NAME_MAX
    assert schema.events.c.account.type.length == ACCOUNT_NAME_MAX
    for table in (schema.poll_state, schema.seen_keys, schema.events):
        assert table.c.trigger.type.length == TRIGGER_NAME_MAX == 100
    assert schema.events.c.type.type.length == EVENT_TYPE_MAX == 100
    assert schema.deliveries.c.sink.type.length == SINK_NAME_MAX == 200
    assert schema.sink_state.c.name.type.length == SINK_NAME_MAX


def custom_trigger(name: str, event: str = "reply.new") -> str:
    return (
        MINIMAL.replace("[triggers.leads]\n", "")
        + f"[triggers.{name}]\npath = '/r'\nkey = 'id'\nevent = '{event}'\ninterval = '5m'\n"
    )


@pytest.mark.parametrize(
    ("build", "limit", "key"),
    [
        (
            lambda n: MINIMAL.replace('name = "acme"', f'name = "{n}"'),
            ACCOUNT_NAME_MAX,
            "accounts[0].name",
        ),
        (lambda n: MINIMAL + SINK.replace("'crm'", f"'{n}'"), SINK_NAME_MAX, "sinks[0].name"),
        (lambda n: trigger(f"event = '{n}'"), EVENT_TYPE_MAX, "triggers.leads.event"),
    ],
    ids=["account", "sink", "event"],
)
def test_name_lengths(tmp_path: Path, build, limit: int, key: str) -> None:  # type: ignore[no-untyped-def]
    load_text(tmp_path, build("a" * limit))
    message = load_error(tmp_path, build("a" * (limit + 1)))
    assert message.endswith(
        f": {key}: must be at most {limit} characters long (it has {limit + 1})"
    ), message
    assert load_error(tmp_path, build("a" * 300)).endswith("(it has 300)")


def test_trigger_name_length(tmp_path: Path) -> None:
    config = load_text(tmp_path, custom_trigger("t" * TRIGGER_NAME_MAX))
    assert list(config.triggers) == ["t" * TRIGGER_NAME_MAX]
    message = load_error(tmp_path, custom_trigger("t" * (TRIGGER_NAME_MAX + 1)))
    assert message.endswith(
        f": triggers: the trigger name {show('t' * (TRIGGER_NAME_MAX + 1))} must be at most "
        f"{TRIGGER_NAME_MAX} characters long (it has {TRIGGER_NAME_MAX + 1})"
    ), message


# --- engine.database: SQLite and PostgreSQL only


@pytest.mark.parametrize(
    ("database", "sentence"),
    [
        (
            "mysql://u:pw-not-shown@h/db",
            'engine.database: only SQLite ("sqlite:///FILE") and PostgreSQL '
            "(\"postgresql+psycopg://USER@HOST/DBNAME\") are supported, not 'mysql'",
        ),
        ("nosuchdb://x", "are supported, not 'nosuchdb'"),
        ("postgres://u@h/db", "are supported, not 'postgres'"),
        ("mysql+pymysql://u@h/db", "are supported, not 'mysql+pymysql'"),
        (
            "postgresql+psycopg2://u@h/db",
            "engine.database: PostgreSQL is used through the psycopg driver: write "
            "\"postgresql+psycopg://...\" (not 'postgresql+psycopg2')",
        ),
        (
            "sqlite+aiosqlite:///x.db",
            "engine.database: SQLite is used through Python's sqlite3: write "
            "\"sqlite:///FILE\" (not 'sqlite+aiosqlite')",
        ),
    ],
)
def test_unsupported_databases(tmp_path: Path, database: str, sentence: str) -> None:
    message = load_error(tmp_path, f"[engine]\ndatabase = '{database}'\n" + MINIMAL)
    assert message.startswith(f"{tmp_path / 'trigger-engine.toml'}: line 2: engine.database: ")
    assert sentence in message
    assert "pw-not-shown" not in message


@pytest.mark.parametrize(
    ("database", "url"),
    [
        ("sqlite:////abs/te.db", "sqlite:////abs/te.db"),
        ("sqlite+pysqlite:////abs/te.db", "sqlite+pysqlite:////abs/te.db"),
        ("sqlite://", "sqlite://"),
        ("postgresql+psycopg://u:p@db/x", "postgresql+psycopg://u:p@db/x"),
        # SQLAlchemy 2.0 would take psycopg2 (not installed) for a plain postgresql:// URL.
        ("postgresql://u:p@db/x", "postgresql+psycopg://u:p@db/x"),
        ("postgresql://u:p%40ss@db:5433/x?sslmode=require", None),
    ],
)
def test_supported_databases(tmp_path: Path, database: str, url: str | None) -> None:
    config = load_text(tmp_path, f"[engine]\ndatabase = '{database}'\n" + MINIMAL)
    assert config.engine.database == database
    if url is None:
        url = "postgresql+psycopg" + database.removeprefix("postgresql")
    assert config.database_url() == url


def test_postgresql_url_without_psycopg_keeps_its_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    message = load_error(tmp_path, "[engine]\ndatabase = 'postgresql://u@db/x'\n" + MINIMAL)
    assert message.endswith(
        "engine.database: PostgreSQL needs the psycopg driver, which is not installed: "
        "pip install 'trigger-engine[postgres]'"
    )


# --- nesting


def test_arrays_nested_thousands_deep(tmp_path: Path) -> None:
    text = MINIMAL + "x = " + "[" * 5000 + "]" * 5000 + "\n"
    message = load_error(tmp_path, text)
    assert message == (
        f"{tmp_path / 'trigger-engine.toml'}: invalid TOML: arrays or tables are nested "
        "more than 32 levels deep"
    )


def test_inline_tables_nested_thousands_deep(tmp_path: Path) -> None:
    text = MINIMAL + "x = " + "{a = " * 5000 + "1" + "}" * 5000 + "\n"
    message = load_error(tmp_path, text)
    assert message.endswith("invalid TOML: arrays or tables are nested more than 32 levels deep")


def test_tables_nested_thousands_deep(tmp_path: Path) -> None:
    text = MINIMAL + "[engine." + ".".join(["a"] * 5000) + "]\n"
    message = load_error(tmp_path, text)
    assert message == (
        f"{tmp_path / 'trigger-engine.toml'}: line 6: engine.a: arrays or tables are nested "
        "more than 32 levels deep"
    )


def test_nesting_just_inside_the_limit_is_an_ordinary_error(tmp_path: Path) -> None:
    # The file's table is level 1, [engine] level 2: 30 more arrays make 32 levels.
    inside = engine("x = " + "[" * 30 + "]" * 30)
    assert load_error(tmp_path, inside).endswith(": unknown key 'engine.x'")
    outside = engine("x = " + "[" * 31 + "]" * 31)
    assert load_error(tmp_path, outside).endswith(
        ": line 2: engine.x: arrays or tables are nested more than 32 levels deep"
    )


def test_config_from_dict_refuses_deep_nesting() -> None:
    deep: object = 1
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(ConfigError) as info:
        config_from_dict(base_dict(engine={"x": deep}), env={})
    assert str(info.value) == (
        "invalid configuration: engine.x: arrays or tables are nested more than 32 levels deep"
    )


def test_a_deep_file_does_not_break_the_next_load(tmp_path: Path) -> None:
    write(tmp_path, MINIMAL + "x = " + "[" * 5000 + "]" * 5000 + "\n", name="deep.toml")
    with pytest.raises(ConfigError):
        load_config(tmp_path / "deep.toml", ENV)
    assert load_text(tmp_path, MINIMAL).accounts[0].name == "acme"


def test_the_readme_and_the_example_give_each_duration_range() -> None:
    from trigger_engine.config import fields

    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    example = (REPO_ROOT / "config.example.toml").read_text(encoding="utf-8")
    for key, allowed in [
        ("engine.shutdown_grace", fields.SHUTDOWN_GRACE),
        ("engine.retention", fields.RETENTION),
        ("engine.lease", fields.LEASE),
        ("source.timeout", fields.TIMEOUT),
        ("triggers.T.interval", fields.INTERVAL),
        ("triggers.T.pause_after", fields.PAUSE_AFTER),
        ("sinks[].timeout", fields.TIMEOUT),
        ("sinks[].retry.schedule", fields.RETRY_STEP),
    ]:
        (row,) = [line for line in readme if line.startswith(f"| `{key}`")]
        high = durations.format_duration(allowed.high)
        assert high in row, (key, row)
        assert f'"{high}"' in example or f"-{high})" in example, key
        if allowed.low:
            assert durations.format_duration(allowed.low) in row, (key, row)
