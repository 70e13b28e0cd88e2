"""Tests for trigger_engine.config: TOML → frozen models, and one clear sentence per problem."""

from __future__ import annotations

import os
import re
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from trigger_engine.config import (
    Account,
    Config,
    EngineSettings,
    PaginationSettings,
    RetrySettings,
    Sink,
    SourceSettings,
    TriggerSettings,
    config_from_dict,
    find_config_path,
    load_config,
    parse_duration,
)
from trigger_engine.config.diagnostics import _LineIndex
from trigger_engine.config.models import ConsoleSettings
from trigger_engine.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]

GOOD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # base64 of 24 bytes
ENV = {"ALFRED_API_KEY": "alfred-key-123"}

MINIMAL = """\
[[accounts]]
name = "acme"
api_key = "${ALFRED_API_KEY}"

[triggers.leads]
"""

CONTRACT_SAMPLE = """\
[engine]
database = "sqlite:///trigger-engine.db"   # any SQLAlchemy URL; postgresql+psycopg://...
# listen = "127.0.0.1:9464"                # optional: GET /healthz and GET /metrics (Prometheus)
# log_format = "text"                       # or "json"

[source]                                     # the Meet Alfred API
base_url = "https://app.meetalfred.com/api/integrations/zapier"
auth_param = "api_key"                       # the API key travels as this query parameter
timeout = "30s"

[[accounts]]                                 # one per organisation (API keys are per organisation)
name = "acme"
api_key = "${ALFRED_API_KEY}"

[triggers.leads]                             # built-in triggers: campaigns, leads, connections
interval = "5m"
# enabled = true
# on_first_poll = "seed"                     # "seed": remember what exists, fire nothing (Zapier);
#                                            # "emit": fire everything that exists

[triggers.connections]
interval = "5m"

[triggers.campaigns]
interval = "15m"

[[sinks]]
name = "crm"
url = "https://hooks.example.com/alfred"
# events = ["lead.new"]                      # default: every event type
# secret = "${CRM_WEBHOOK_SECRET}"           # whsec_... ; enables webhook-signature
# headers = { Authorization = "Bearer ${CRM_TOKEN}" }
# timeout = "15s"
# format = "envelope"                         # or "raw": the body is the item alone
# [sinks.retry]
# schedule = ["5s", "5m", "30m", "2h", "5h", "10h", "10h"]   # delays after attempt 1, 2, ...
"""


def write(tmp_path: Path, text: str, name: str = "trigger-engine.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    return load_config(write(tmp_path, text), ENV if env is None else env)


def load_error(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, ENV if env is None else env)
    message = str(info.value)
    # The shape every configuration error shares: one line, the file first, no pydantic noise.
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    for noise in ("validation error", "For further information", "errors.pydantic.dev", "type="):
        assert noise not in message
    assert info.value.exit_code == 2
    return message


def base_dict(**extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "accounts": [{"name": "acme", "api_key": "k"}],
        "triggers": {"leads": {}},
    }
    data.update(extra)
    return data


# --- durations


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("1.5s", 1.5),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        (" 10s ", 10.0),
        ("45", 45.0),
        ("0.25", 0.25),
        ("0s", 0.0),
        (90, 90.0),
        (2.5, 2.5),
        (0, 0.0),
    ],
)
def test_parse_duration_accepts(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)
    assert isinstance(parse_duration(value), float)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("fast", "invalid duration 'fast'"),
        ("", "invalid duration ''"),
        ("5 minutes", "invalid duration"),
        ("5M", "invalid duration"),
        ("1.s", "invalid duration"),
        ("s", "invalid duration"),
        ("-5s", "must not be negative"),
        (-3, "must not be negative"),
        (True, "invalid duration true"),
        (None, "invalid duration None"),
        ([5], "invalid duration"),
        (float("inf"), "finite"),
        (float("nan"), "finite"),
    ],
)
def test_parse_duration_rejects(value: object, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_duration(value)


def test_durations_in_fields_and_zero_rules(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        MINIMAL
        + """\
        interval = 90
        [engine]
        shutdown_grace = 0
        retention = "7d"
        poll_workers = 16
        [source]
        timeout = "1500ms"
        [[sinks]]
        name = "crm"
        url = "https://hooks.example.com/x"
        timeout = 2.5
        retry = { schedule = ["1s", 60, "1h"] }
        """,
    )
    assert config.triggers["leads"].interval == 90.0
    assert config.engine.shutdown_grace == 0.0
    assert config.engine.retention == 7 * 86400.0
    assert config.engine.poll_workers == 16
    assert config.source.timeout == 1.5
    assert config.sinks[0].timeout == 2.5
    assert config.sinks[0].retry.schedule == (1.0, 60.0, 3600.0)


@pytest.mark.parametrize(
    ("snippet", "key"),
    [
        ('[triggers.campaigns]\ninterval = "0s"', "triggers.campaigns.interval"),
        ("[source]\ntimeout = 0", "source.timeout"),
        ('[engine]\nretention = "0d"', "engine.retention"),
    ],
)
def test_zero_duration_rejected_where_it_must_be_positive(
    tmp_path: Path, snippet: str, key: str
) -> None:
    message = load_error(tmp_path, MINIMAL + snippet + "\n")
    assert f"{key}: must be a duration greater than zero" in message


def test_bad_duration_names_file_line_key_and_value(tmp_path: Path) -> None:
    message = load_error(tmp_path, MINIMAL + 'interval = "fast"\n')
    path = tmp_path / "trigger-engine.toml"
    assert message == (
        f"{path}: line 6: triggers.leads.interval: invalid duration 'fast' "
        '(use e.g. "30s", "5m", "2h" or a number of seconds)'
    )


# --- triggers


def test_builtin_trigger_defaults(tmp_path: Path) -> None:
    config = load_text(tmp_path, MINIMAL + "[triggers.campaigns]\n[triggers.connections]\n")
    leads = config.triggers["leads"]
    assert (leads.name, leads.path, leads.key, leads.event, leads.interval) == (
        "leads",
        "/leads",
        ("id",),
        "lead.new",
        300.0,
    )
    assert (leads.enabled, leads.on_first_poll, leads.items_path, leads.params) == (
        True,
        "seed",
        None,
        {},
    )
    campaigns = config.triggers["campaigns"]
    assert (campaigns.path, campaigns.key, campaigns.event, campaigns.interval) == (
        "/campaigns",
        ("key",),
        "campaign.new",
        900.0,
    )
    connections = config.triggers["connections"]
    assert (connections.path, connections.event) == ("/connections", "connection.new")
    # file order is kept
    assert list(config.triggers) == ["leads", "campaigns", "connections"]


def test_builtin_trigger_overrides(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        MINIMAL
        + """\
        path = "/v2/leads"
        key = ["campaign.id", "person.key"]
        items_path = "data.items"
        params = { status = "active", limit = 100, archived = false, ratio = 0.5 }
        enabled = false
        on_first_poll = "emit"
        event = "lead.created"
        """,
    )
    leads = config.triggers["leads"]
    assert leads.path == "/v2/leads"
    assert leads.key == ("campaign.id", "person.key")
    assert leads.items_path == "data.items"
    assert leads.params == {"status": "active", "limit": "100", "archived": "false", "ratio": "0.5"}
    assert leads.enabled is False
    assert leads.on_first_poll == "emit"
    assert leads.event == "lead.created"
    assert leads.interval == 300.0  # not overridden: still the built-in default


@pytest.mark.parametrize(
    ("toml_key", "expected"),
    [
        ('"id"', ("id",)),
        ('"person.key"', ("person.key",)),
        ('["campaign", "id"]', ("campaign", "id")),
    ],
)
def test_key_forms(tmp_path: Path, toml_key: str, expected: tuple[str, ...]) -> None:
    config = load_text(tmp_path, MINIMAL + f"key = {toml_key}\n")
    assert config.triggers["leads"].key == expected


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("key = []", "triggers.leads.key: must name at least one field"),
        ('key = ""', "triggers.leads.key: invalid field ''"),
        ('key = ["id", "a..b"]', "triggers.leads.key: invalid field 'a..b'"),
        ("key = [1]", "triggers.leads.key[0]: must be a string"),
        ('path = "leads"', 'triggers.leads.path: must start with "/"'),
        ('items_path = "data."', "triggers.leads.items_path: invalid path 'data.'"),
        ("params = { nested = { a = 1 } }", "triggers.leads.params.nested: must be a string"),
        ('params = { api_key = "x" }', "triggers.leads.params.api_key: conflicts with [source]"),
        ('on_first_poll = "all"', "triggers.leads.on_first_poll: must be 'seed' or 'emit'"),
        ('enabled = "yes"', "triggers.leads.enabled: must be true or false"),
        ('event = ""', "triggers.leads.event: must not be empty"),
        ('name = "other"', "triggers.leads.name: a trigger's name is its table name"),
    ],
)
def test_trigger_field_errors(tmp_path: Path, line: str, fragment: str) -> None:
    message = load_error(tmp_path, MINIMAL + line + "\n")
    assert fragment in message
    assert ": line 6: " in message


def test_custom_trigger(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        MINIMAL
        + """\
        [triggers.replies]
        path = "/replies"
        key = ["conversation.id", "message.id"]
        event = "reply.new"
        interval = "10m"
        """,
    )
    replies = config.triggers["replies"]
    assert replies.name == "replies"
    assert replies.key == ("conversation.id", "message.id")
    assert replies.interval == 600.0
    assert replies.on_first_poll == "seed"
    assert replies.items_path is None


@pytest.mark.parametrize(
    ("table", "missing"),
    [
        ("[triggers.leeds]\n", "missing: path, key, event, interval"),
        ('[triggers.replies]\npath = "/r"\nkey = "id"\nevent = "reply.new"\n', "missing: interval"),
    ],
)
def test_custom_trigger_needs_all_fields(tmp_path: Path, table: str, missing: str) -> None:
    text = MINIMAL.replace("[triggers.leads]\n", table)
    message = load_error(tmp_path, text)
    name = table.split(".")[1].split("]")[0]
    assert f": line 5: triggers.{name}: unknown trigger '{name}'" in message
    assert "built-in triggers are campaigns, connections, lead_updates, leads" in message
    assert "a custom trigger needs path, key, event and interval" in message
    assert missing in message


def test_unknown_trigger_suggests_builtin(tmp_path: Path) -> None:
    message = load_error(tmp_path, MINIMAL.replace("leads", "leeds"))
    assert "unknown trigger 'leeds' (did you mean 'leads'?)" in message


@pytest.mark.parametrize("name", ["Leads", "my-trigger"])
def test_trigger_name_rule(tmp_path: Path, name: str) -> None:
    text = MINIMAL.replace("[triggers.leads]", f'[triggers."{name}"]')
    message = load_error(tmp_path, text)
    assert f"invalid trigger name '{name}'" in message
    assert ": line 5: " in message


# --- unknown keys


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            MINIMAL + "[trigers.campaigns]\n",
            ": line 6: unknown key 'trigers' (did you mean 'triggers'?)",
        ),
        (
            "[engine]\ndatabse = 'sqlite://'\n" + MINIMAL,
            ": line 2: unknown key 'engine.databse' (did you mean 'database'?)",
        ),
        (
            MINIMAL + "intervall = '5m'\n",
            ": line 6: unknown key 'triggers.leads.intervall' (did you mean 'interval'?)",
        ),
        (
            MINIMAL + "[[sinks]]\nname = 'a'\nurl = 'http://h'\n"
            "[[sinks]]\nname = 'b'\nurl = 'http://h'\nretries = 3\n",
            ": line 12: unknown key 'sinks[1].retries' (did you mean 'retry'?)",
        ),
        (
            MINIMAL + "[[sinks]]\nname = 'a'\nurl = 'http://h'\n[sinks.retries]\nschedule = []\n",
            ": line 9: unknown key 'sinks[0].retries' (did you mean 'retry'?)",
        ),
        (
            MINIMAL + "[[sinks]]\nname = 'a'\nurl = 'http://h'\n[sinks.retry]\nschedul = []\n",
            ": line 10: unknown key 'sinks[0].retry.schedul' (did you mean 'schedule'?)",
        ),
        (
            MINIMAL + "[[sinks]]\nname = 'a'\nurl = 'http://h'\nretry = { delays = [] }\n",
            ": line 9: unknown key 'sinks[0].retry.delays'",
        ),
        (
            "[[accounts]]\nname = 'acme'\napi_key = 'k'\nzzz = 1\n[triggers.leads]\n",
            ": line 4: unknown key 'accounts[0].zzz'",
        ),
        (
            "colour = 'blue'\n" + MINIMAL,
            ": line 1: unknown key 'colour'",
        ),
        (
            "path = '/etc'\n" + MINIMAL,
            ": line 1: unknown key 'path'",
        ),
    ],
)
def test_unknown_keys(tmp_path: Path, text: str, expected: str) -> None:
    message = load_error(tmp_path, text)
    assert expected in message
    if "did you mean" not in expected:
        assert "did you mean" not in message


# --- ${ENV}


def test_env_substitution_everywhere(tmp_path: Path) -> None:
    env = {
        **ENV,
        "CRM_TOKEN": "tok-456",
        "CRM_WEBHOOK_SECRET": GOOD_SECRET,
        "HOOK_HOST": "hooks.example.com",
        "STATUS": "active",
        "LEAD_EVENT": "lead.new",
    }
    config = load_text(
        tmp_path,
        MINIMAL
        + """\
        params = { status = "${STATUS}" }
        [[sinks]]
        name = "crm"
        url = "https://${HOOK_HOST}/alfred"
        events = ["${LEAD_EVENT}"]
        secret = "${CRM_WEBHOOK_SECRET}"
        headers = { Authorization = "Bearer ${CRM_TOKEN}", X-Both = "${STATUS}/${CRM_TOKEN}" }
        """,
        env,
    )
    assert config.accounts[0].api_key.get_secret_value() == "alfred-key-123"
    assert config.triggers["leads"].params == {"status": "active"}
    sink = config.sinks[0]
    assert sink.url == "https://hooks.example.com/alfred"
    assert sink.events == ("lead.new",)
    assert sink.secret is not None
    assert sink.secret.get_secret_value() == GOOD_SECRET
    assert sink.headers["Authorization"].get_secret_value() == "Bearer tok-456"
    assert sink.headers["X-Both"].get_secret_value() == "active/tok-456"


def test_env_value_is_not_substituted_again(tmp_path: Path) -> None:
    config = load_text(tmp_path, MINIMAL, {"ALFRED_API_KEY": "${OTHER}"})
    assert config.accounts[0].api_key.get_secret_value() == "${OTHER}"


def test_env_defaults_to_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALFRED_API_KEY", "from-os-environ")
    config = load_config(write(tmp_path, MINIMAL))
    assert config.accounts[0].api_key.get_secret_value() == "from-os-environ"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MINIMAL, ": line 3: accounts[0].api_key uses ${ALFRED_API_KEY}, which is not set"),
        (
            MINIMAL.replace("${ALFRED_API_KEY}", "k")
            + "[[sinks]]\nname = 'crm'\nurl = 'https://h'\n"
            'headers = { Authorization = "Bearer ${CRM_TOKEN}" }\n',
            ": line 9: sinks[0].headers.Authorization uses ${CRM_TOKEN}, which is not set",
        ),
        (
            MINIMAL.replace("${ALFRED_API_KEY}", "k")
            + "[[sinks]]\nname = 'crm'\nurl = 'https://h'\nevents = ['lead.new', '${EV}']\n",
            ": line 9: sinks[0].events[1] uses ${EV}, which is not set",
        ),
    ],
)
def test_unset_variable(tmp_path: Path, text: str, expected: str) -> None:
    message = load_error(tmp_path, text, env={})
    assert expected in message
    assert message.endswith("which is not set in the environment")


def test_empty_api_key_after_substitution(tmp_path: Path) -> None:
    message = load_error(tmp_path, MINIMAL, env={"ALFRED_API_KEY": ""})
    assert ": line 3: accounts[0].api_key: must not be empty" in message


def test_substituted_value_is_not_echoed(tmp_path: Path) -> None:
    message = load_error(
        tmp_path, MINIMAL + 'interval = "${POLL_EVERY}"\n', env={**ENV, "POLL_EVERY": "zippy9"}
    )
    assert "zippy9" not in message
    assert "triggers.leads.interval: invalid duration '${POLL_EVERY}'" in message


# --- the shipped samples


def test_contract_sample_loads(tmp_path: Path) -> None:
    config = load_text(tmp_path, CONTRACT_SAMPLE)
    assert config.engine.database == "sqlite:///trigger-engine.db"
    assert config.engine.listen is None
    assert config.engine.log_format == "text"
    assert config.engine.shutdown_grace == 30.0
    assert config.engine.retention == 30 * 86400.0
    assert config.source.base_url == "https://app.meetalfred.com/api/integrations/zapier"
    assert config.source.auth_param == "api_key"
    assert config.source.timeout == 30.0
    assert [a.name for a in config.accounts] == ["acme"]
    assert list(config.triggers) == ["leads", "connections", "campaigns"]
    assert config.triggers["campaigns"].interval == 900.0
    (sink,) = config.sinks
    assert (sink.name, sink.url, sink.events, sink.secret, sink.headers) == (
        "crm",
        "https://hooks.example.com/alfred",
        None,
        None,
        {},
    )
    assert (sink.timeout, sink.format, sink.max_in_flight) == (15.0, "envelope", 8)
    assert sink.retry.schedule == (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
    assert config.path == tmp_path / "trigger-engine.toml"


def test_example_file_loads() -> None:
    example = REPO_ROOT / "config.example.toml"
    text = example.read_text(encoding="utf-8")
    env = {name: f"value-of-{name}" for name in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text)}
    config = load_config(example, env)
    assert config.accounts[0].api_key.get_secret_value() == "value-of-ALFRED_API_KEY"
    assert set(config.triggers) == {"leads", "connections", "campaigns"}
    assert config.sinks[0].name == "crm"


def test_example_file_documents_every_key() -> None:
    text = (REPO_ROOT / "config.example.toml").read_text(encoding="utf-8")
    models: list[type[BaseModel]] = [
        Config,
        EngineSettings,
        SourceSettings,
        Account,
        TriggerSettings,
        Sink,
        RetrySettings,
        PaginationSettings,
        ConsoleSettings,
    ]
    for model in models:
        for field in model.model_fields:
            if (model, field) in {(Config, "path"), (TriggerSettings, "name")}:
                continue
            pattern = rf"^[#\s]*({field}\s*=|\[+(\w+\.)*{field}[\].])"
            assert re.search(pattern, text, re.MULTILINE), (
                f"{model.__name__}.{field} is not documented in config.example.toml"
            )


# --- sinks


def test_sink_full(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        MINIMAL
        + f"""\
        [[sinks]]
        name = "crm"
        url = "http://127.0.0.1:8080/hook?token=abc"
        events = ["lead.new", "campaign.new"]
        secret = "{GOOD_SECRET}"
        format = "raw"
        max_in_flight = 256
        [sinks.retry]
        schedule = []
        [[sinks]]
        name = "audit.log-2"
        url = "https://audit.example.com"
        """,
    )
    crm, audit = config.sinks
    assert crm.events == ("lead.new", "campaign.new")
    assert crm.format == "raw"
    assert crm.max_in_flight == 256
    assert crm.retry.schedule == ()
    assert audit.retry.schedule == RetrySettings().schedule
    assert config.sink("audit.log-2") is audit
    with pytest.raises(KeyError):
        config.sink("nope")


@pytest.mark.parametrize(
    "url",
    ["ftp://hooks.example.com/x", "hooks.example.com/x", "https://", "http://h:99999/", ""],
)
def test_invalid_sink_url(tmp_path: Path, url: str) -> None:
    message = load_error(tmp_path, MINIMAL + f"[[sinks]]\nname = 'crm'\nurl = '{url}'\n")
    assert ": line 8: sinks[0].url: must be an http:// or https:// URL with a host" in message


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("max_in_flight = 0", "sinks[0].max_in_flight: must be at least 1"),
        ("max_in_flight = 257", "sinks[0].max_in_flight: must be at most 256"),
        ("max_in_flight = '8'", "sinks[0].max_in_flight: must be an integer"),
        ("format = 'xml'", "sinks[0].format: must be 'envelope', 'raw' or 'slack'"),
        ("events = []", "sinks[0].events: must list at least one event type"),
        ("events = ['lead.neww']", "unknown event type 'lead.neww' (did you mean 'lead.new'?)"),
        ("headers = { 'Bad Header' = 'x' }", "sinks[0].headers: invalid header name 'Bad Header'"),
        ("headers = { Webhook-Id = 'x' }", "header 'Webhook-Id' is set by the engine"),
        ("timeout = 'soon'", "sinks[0].timeout: invalid duration 'soon'"),
        ("name = 'has space'", "sinks[0].name: invalid name 'has space'"),
    ],
)
def test_sink_field_errors(tmp_path: Path, line: str, fragment: str) -> None:
    text = MINIMAL + f"[[sinks]]\nurl = 'https://h'\n{line}\n"
    if not line.startswith("name"):
        text += "name = 'crm'\n"
    message = load_error(tmp_path, text)
    assert fragment in message
    assert ": line 8: " in message


def test_sink_events_may_name_custom_trigger_events(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        MINIMAL
        + """\
        [triggers.replies]
        path = "/replies"
        key = "id"
        event = "reply.new"
        interval = "1m"
        [[sinks]]
        name = "crm"
        url = "https://h"
        events = ["reply.new", "connection.new"]
        """,
    )
    assert config.sinks[0].events == ("reply.new", "connection.new")


@pytest.mark.parametrize(
    "secret",
    [
        "whsec_notbase64!!!",
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # no whsec_ prefix
        "whsec_c2hvcnQ=",  # decodes to 5 bytes
        "whsec_QUJDRA",  # unpadded base64
    ],
)
def test_bad_secret_is_never_echoed(tmp_path: Path, secret: str) -> None:
    message = load_error(
        tmp_path, MINIMAL + f"[[sinks]]\nname = 'crm'\nurl = 'https://h'\nsecret = '{secret}'\n"
    )
    assert ': line 9: sinks[0].secret: must be "whsec_" followed by the base64' in message
    assert secret not in message
    assert secret.removeprefix("whsec_") not in message


def test_bad_secret_from_env_is_never_echoed(tmp_path: Path) -> None:
    message = load_error(
        tmp_path,
        MINIMAL + "[[sinks]]\nname = 'crm'\nurl = 'https://h'\nsecret = '${HOOK_SECRET}'\n",
        env={**ENV, "HOOK_SECRET": "whsec_Zm9vYmFyYmF6!!"},
    )
    assert "Zm9vYmFyYmF6" not in message
    assert "sinks[0].secret" in message


def test_api_key_type_error_is_never_echoed(tmp_path: Path) -> None:
    message = load_error(tmp_path, MINIMAL.replace('"${ALFRED_API_KEY}"', "987654321"))
    assert message.endswith(": line 3: accounts[0].api_key: must be a string")
    assert "987654321" not in message


def test_header_value_is_never_echoed(tmp_path: Path) -> None:
    message = load_error(
        tmp_path,
        MINIMAL + "[[sinks]]\nname = 'crm'\nurl = 'https://h'\n"
        'headers = { Authorization = "Bearer sekrit\\nX: y" }\n',
    )
    assert "sinks[0].headers.Authorization: must not contain a line break" in message
    assert "sekrit" not in message


def test_validation_error_from_models_hides_input() -> None:
    with pytest.raises(ValidationError) as info:
        Account.model_validate({"name": "a", "api_key": 1234567})
    assert "1234567" not in str(info.value)


# --- accounts, names, sections


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            MINIMAL + "[[accounts]]\nname = 'acme'\napi_key = 'other'\n",
            ": line 7: accounts[1].name: duplicate account name 'acme' (also used by accounts[0])",
        ),
        (
            MINIMAL + "[[sinks]]\nname = 'crm'\nurl = 'https://a'\n"
            "[[sinks]]\nname = 'crm'\nurl = 'https://b'\n",
            ": line 10: sinks[1].name: duplicate sink name 'crm'",
        ),
    ],
)
def test_duplicate_names(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in load_error(tmp_path, text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[triggers.leads]\n", "no accounts configured: add an [[accounts]] table"),
        ("accounts = []\n[triggers.leads]\n", ": line 1: no accounts configured"),
        ("[accounts]\nname = 'acme'\n[triggers.leads]\n", "line 1: accounts: must be an array"),
        (MINIMAL.replace("[triggers.leads]\n", ""), "no triggers configured"),
        (
            "triggers = {}\n" + MINIMAL.replace("[triggers.leads]", ""),
            ": line 1: no triggers configured: add a [triggers.NAME] table",
        ),
        (
            "[[accounts]]\napi_key = 'k'\n[triggers.leads]\n",
            ": line 1: accounts[0].name: missing required key",
        ),
        (
            "[[accounts]]\nname = 'a/b'\napi_key = 'k'\n[triggers.leads]\n",
            ": line 2: accounts[0].name: invalid name 'a/b'",
        ),
        ("engine = 5\n" + MINIMAL, ": line 1: engine: must be a table"),
        ("[engine]\nlog_format = 'xml'\n" + MINIMAL, "engine.log_format: must be 'text' or 'json'"),
        ("[engine]\nlisten = 'localhost'\n" + MINIMAL, "engine.listen: invalid address"),
        ("[engine]\nlisten = 'h:0'\n" + MINIMAL, "the port must be 1-65535"),
        ("[engine]\nlisten = '::1:80'\n" + MINIMAL, "IPv6 address goes in brackets"),
        ("[engine]\ndatabase = 'nonsense'\n" + MINIMAL, "engine.database: is not a valid"),
        ("[engine]\npoll_workers = 0\n" + MINIMAL, "engine.poll_workers: must be at least 1"),
        ("[engine]\npoll_workers = 257\n" + MINIMAL, "engine.poll_workers: must be at most 256"),
        ("[engine]\npoll_workers = '4'\n" + MINIMAL, "engine.poll_workers: must be an integer"),
        ("[source]\nbase_url = 'https://h/api?k=1'\n" + MINIMAL, "source.base_url: must not"),
        ("[source]\nbase_url = 'file:///x'\n" + MINIMAL, "source.base_url: must be an http"),
        ("[source]\nauth_param = 'a key'\n" + MINIMAL, "source.auth_param: invalid query"),
    ],
)
def test_structure_errors(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in load_error(tmp_path, text)


@pytest.mark.parametrize(
    ("listen", "ok"),
    [("127.0.0.1:9464", True), ("[::1]:9464", True), ("0.0.0.0:65535", True)],
)
def test_listen_accepted(tmp_path: Path, listen: str, ok: bool) -> None:
    config = load_text(tmp_path, f"[engine]\nlisten = '{listen}'\n" + MINIMAL)
    assert (config.engine.listen == listen) is ok


def test_base_url_trailing_slash_is_removed(tmp_path: Path) -> None:
    config = load_text(tmp_path, "[source]\nbase_url = 'http://127.0.0.1:8099/api/'\n" + MINIMAL)
    assert config.source.base_url == "http://127.0.0.1:8099/api"


def test_first_error_in_file_order_is_reported(tmp_path: Path) -> None:
    text = MINIMAL + "interval = 'bad'\n[engine]\nlog_format = 'xml'\n"
    message = load_error(tmp_path, text)
    assert ": line 6: triggers.leads.interval" in message


# --- files


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path, ENV)
    assert str(info.value) == (
        f"configuration file {path} not found; pass --config FILE or set TRIGGER_ENGINE_CONFIG"
    )


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path, ENV)


def test_a_fifo_is_refused_at_once_without_waiting_for_a_writer(tmp_path: Path) -> None:
    path = tmp_path / "trigger-engine.toml"
    os.mkfifo(path)
    outcome: list[BaseException | Config] = []
    reader = threading.Thread(target=lambda: outcome.append(_load_or_error(path)), daemon=True)
    reader.start()
    reader.join(10)  # opening a FIFO to read it waits for a writer: for ever, here
    assert not reader.is_alive(), "load_config blocked on the FIFO"
    (error,) = outcome
    assert isinstance(error, ConfigError)
    assert str(error) == (
        f"configuration file {path} is a FIFO (named pipe), not a regular file; point "
        "--config (or TRIGGER_ENGINE_CONFIG) at a regular file"
    )


def test_a_device_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^configuration file /dev/null is a device, not a"):
        load_config(Path("/dev/null"), ENV)


def _load_or_error(path: Path) -> BaseException | Config:
    try:
        return load_config(path, ENV)
    except BaseException as exc:
        return exc


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[engine]\n\nlog_format = = 'x'\n", ": line 3, column 14: invalid TOML: invalid value"),
        ("a = [1,\n", ": at the end of the file: invalid TOML: "),
        ("[engine]\n[engine]\n", ": line 2, column 8: invalid TOML: cannot declare"),
    ],
)
def test_toml_syntax_error(tmp_path: Path, text: str, expected: str) -> None:
    message = load_error(tmp_path, text)
    assert expected in message
    assert "(at line" not in message


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_bytes(b"# ok\nname = '\xff'\n")
    with pytest.raises(ConfigError, match=r"t\.toml: line 2: invalid TOML: the file is not UTF-8"):
        load_config(path, ENV)


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode())
    assert load_config(path, ENV).accounts[0].name == "acme"


@pytest.mark.parametrize(
    ("cli", "env", "expected"),
    [
        ("cli.toml", {"TRIGGER_ENGINE_CONFIG": "env.toml"}, Path("cli.toml")),
        (None, {"TRIGGER_ENGINE_CONFIG": "env.toml"}, Path("env.toml")),
        (None, {}, None),
        (None, {"TRIGGER_ENGINE_CONFIG": ""}, None),
    ],
)
def test_find_config_path(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cli: str | None,
    env: dict[str, str],
    expected: Path | None,
) -> None:
    monkeypatch.chdir(tmp_path)
    found = find_config_path(cli, env)
    assert found == (expected if expected is not None else tmp_path / "trigger-engine.toml")


def test_find_config_path_expands_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert find_config_path("~/x.toml", {}) == tmp_path / "x.toml"


# --- database_url


@pytest.mark.parametrize(
    ("database", "expected"),
    [
        ("sqlite:///state.db", "sqlite:///{dir}/state.db"),
        ("sqlite:///data/../state.db", "sqlite:///{dir}/state.db"),
        ("sqlite+pysqlite:///state.db?timeout=5", "sqlite+pysqlite:///{dir}/state.db?timeout=5"),
        ("sqlite:////abs/state.db", "sqlite:////abs/state.db"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("sqlite://", "sqlite://"),
        ("postgresql+psycopg://u:p@db/x", "postgresql+psycopg://u:p@db/x"),
    ],
)
def test_database_url_relative_to_config_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database: str, expected: str
) -> None:
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = write(conf_dir, f"[engine]\ndatabase = '{database}'\n" + MINIMAL)
    config = load_config(path, ENV)
    assert config.database_url() == expected.format(dir=conf_dir.resolve())
    assert config.engine.database == database  # the setting itself is untouched


def test_database_url_relative_to_config_dir_given_as_relative_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etc").mkdir()
    write(tmp_path / "etc", MINIMAL)
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("etc/trigger-engine.toml"), ENV)
    monkeypatch.chdir("/")
    assert config.database_url() == f"sqlite:///{tmp_path.resolve()}/etc/trigger-engine.db"


def test_database_url_without_file_uses_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = config_from_dict(base_dict())
    assert config.path is None
    assert config.database_url() == f"sqlite:///{tmp_path.resolve()}/trigger-engine.db"


# --- building in code


# --- PostgreSQL needs the postgres extra

PSYCOPG_MISSING = (
    "engine.database: PostgreSQL needs the psycopg driver, which is not installed: "
    "pip install 'trigger-engine[postgres]'"
)


@pytest.mark.parametrize(
    "database",
    ["postgresql+psycopg://te:pw-not-shown@db.internal/te", "postgresql://te@db.internal/te"],
)
def test_postgresql_without_psycopg_names_the_key_and_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database: str
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # `import psycopg` raises ImportError
    message = load_error(tmp_path, f"[engine]\ndatabase = '{database}'\n" + MINIMAL)
    assert message == f"{tmp_path / 'trigger-engine.toml'}: line 2: {PSYCOPG_MISSING}"
    with pytest.raises(ConfigError) as info:
        config_from_dict(base_dict(engine={"database": database}))
    assert str(info.value) == f"invalid configuration: {PSYCOPG_MISSING}"


def test_sqlite_without_psycopg_still_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    config = load_text(tmp_path, "[engine]\ndatabase = 'sqlite:///te.db'\n" + MINIMAL)
    assert config.engine.database == "sqlite:///te.db"


def test_postgresql_with_psycopg_loads(tmp_path: Path) -> None:
    database = "postgresql+psycopg://te@db.internal/te"
    config = load_text(tmp_path, f"[engine]\ndatabase = '{database}'\n" + MINIMAL)
    assert config.engine.database == database


def test_config_from_dict_validates_and_substitutes(tmp_path: Path) -> None:
    config = config_from_dict(
        base_dict(
            accounts=[{"name": "acme", "api_key": "${KEY}"}],
            sinks=[{"name": "crm", "url": "http://127.0.0.1:9/x", "secret": GOOD_SECRET}],
        ),
        path=tmp_path / "demo.toml",
        env={"KEY": "demo"},
    )
    assert config.account("acme").api_key.get_secret_value() == "demo"
    assert config.path == tmp_path / "demo.toml"
    with pytest.raises(KeyError):
        config.account("globex")
    with pytest.raises(ConfigError, match=r"^invalid configuration: triggers.leads.interval: "):
        config_from_dict(base_dict(triggers={"leads": {"interval": "x"}}), env={})
    with pytest.raises(ConfigError, match=r"uses \$\{NOPE\}, which is not set"):
        config_from_dict(base_dict(accounts=[{"name": "a", "api_key": "${NOPE}"}]), env={})


def test_models_are_frozen() -> None:
    config = config_from_dict(base_dict(), env={})
    with pytest.raises(ValidationError):
        config.engine.log_format = "json"
    with pytest.raises(ValidationError):
        config.triggers["leads"].interval = 1.0


def test_config_built_directly_fills_trigger_defaults() -> None:
    config = Config(
        accounts=(Account(name="acme", api_key="k"),),  # type: ignore[arg-type]
        triggers={"campaigns": {}},  # type: ignore[dict-item]
    )
    assert config.triggers["campaigns"].key == ("key",)
    assert TriggerSettings(name="leads").path == "/leads"  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="holds the settings of trigger 'leads'"):
        Config(
            accounts=(Account(name="acme", api_key="k"),),  # type: ignore[arg-type]
            triggers={"campaigns": TriggerSettings(name="leads")},  # type: ignore[call-arg]
        )


def test_secrets_lists_every_secret() -> None:
    config = config_from_dict(
        {
            "accounts": [{"name": "a", "api_key": "key-a"}, {"name": "b", "api_key": "key-b"}],
            "triggers": {"leads": {}},
            "sinks": [
                {
                    "name": "crm",
                    "url": "https://h",
                    "secret": GOOD_SECRET,
                    "headers": {"Authorization": "Bearer ${TOK}", "X-Plain": "v1"},
                },
                {"name": "other", "url": "https://h2", "headers": {"X-Plain": "v1"}},
            ],
        },
        env={"TOK": "t0k"},
    )
    assert config.secrets() == [
        "key-a",
        "key-b",
        GOOD_SECRET,
        GOOD_SECRET.removeprefix("whsec_"),
        "Bearer t0k",
        "v1",
    ]


def test_secrets_include_the_credentials_of_urls() -> None:
    config = config_from_dict(
        {
            "source": {"base_url": "https://te-user:pw-5ecret-41@alfred.test/api"},
            "accounts": [{"name": "a", "api_key": "key-a"}],
            "triggers": {"leads": {}},
            "sinks": [
                {"name": "crm", "url": "https://h.test/hook?token=tok-5ecret-9f2c&v=2"},
                {"name": "plain", "url": "https://h2.test/hook"},
            ],
        }
    )
    assert config.secrets() == [
        "key-a",
        "te-user:pw-5ecret-41",
        "te-user%3Apw-5ecret-41",
        "pw-5ecret-41",
        "tok-5ecret-9f2c",
    ]


# --- the line finder


def test_line_index() -> None:
    text = textwrap.dedent(
        """\
        title = "x"                       # 1
        [engine]                          # 2
        database = "sqlite://"            # 3
        [[sinks]]                         # 4
        name = "a"                        # 5
        schedule = [                      # 6
          [1],                            # 7: inside an array, not a header
        ]                                 # 8
        note = \"\"\"                       # 9
        fake = 1                          # 10: inside a multi-line string
        \"\"\"                              # 11
        [[sinks]]                         # 12
        "quoted.key" = 1                  # 13
        [sinks.retry]                     # 14
        schedule = []                     # 15
        [triggers]                        # 16
        leads.interval = "5m"             # 17
        campaigns = { interval = "1m" }   # 18
        """
    )
    index = _LineIndex(text)
    assert index.line_of(("title",)) == 1
    assert index.line_of(("engine",)) == 2
    assert index.line_of(("engine", "database")) == 3
    assert index.line_of(("sinks", 0)) == 4
    assert index.line_of(("sinks", 0, "name")) == 5
    assert index.line_of(("sinks", 0, "schedule", 0)) == 6
    assert index.line_of(("sinks", 0, "fake")) == 4  # not found: falls back to the table
    assert index.line_of(("sinks", 1)) == 12
    assert index.line_of(("sinks", 1, "quoted.key")) == 13
    assert index.line_of(("sinks", 1, "retry", "schedule")) == 15
    assert index.line_of(("sinks", 0, "retry")) == 4  # sinks[0] has no retry table
    assert index.line_of(("triggers", "leads", "interval")) == 17
    assert index.line_of(("triggers", "campaigns", "interval")) == 18
    assert index.line_of(("accounts",)) is None


# --- [console]

CONSOLE_TOKEN = "console-token-0123456789abcdef"


def test_console_token_from_the_environment_is_a_secret(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        "[engine]\nlisten = '127.0.0.1:9464'\n[console]\ntoken = '${CONSOLE_TOKEN}'\n" + MINIMAL,
        {**ENV, "CONSOLE_TOKEN": CONSOLE_TOKEN},
    )
    assert config.console is not None
    assert config.console.token.get_secret_value() == CONSOLE_TOKEN
    assert CONSOLE_TOKEN not in repr(config)
    assert CONSOLE_TOKEN in config.secrets()  # redacted from every log line


def test_no_console_section_means_no_console(tmp_path: Path) -> None:
    assert load_text(tmp_path, "[engine]\nlisten = '0.0.0.0:9464'\n" + MINIMAL).console is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[engine]\nlisten = '0.0.0.0:9464'\n[console]\n" + MINIMAL,
            "line 3: console.token: is required: the engine serves no console without one",
        ),
        (
            "[engine]\nlisten = '127.0.0.1:9464'\n[console]\ntoken = ' '\n" + MINIMAL,
            "console.token: must not be empty",
        ),
        (
            "[engine]\nlisten = '127.0.0.1:9464'\n[console]\ntoken = 'a b'\n" + MINIMAL,
            "console.token: must be printable ASCII without spaces",
        ),
        (
            "[console]\ntoken = 'long-enough-token'\n" + MINIMAL,
            "[console] needs [engine] listen",
        ),
        (
            "[engine]\nlisten = '127.0.0.1:9464'\n[console]\ntoken = 'x'\npath = '/'\n" + MINIMAL,
            "console.path",
        ),
    ],
)
def test_console_errors(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in load_error(tmp_path, text)
