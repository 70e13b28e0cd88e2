"""The configuration's schema: frozen pydantic models and their validators.

Validators raise ``ValueError`` with a short reason, or :class:`LocatedError` to point at a
key path of their choosing; :mod:`trigger_engine.config.diagnostics` turns either into the
sentence the user reads, and never echoes a secret (API keys, sink secrets and header
values are ``SecretStr``; models hide their input in errors).

No ``from __future__ import annotations`` in this module: pydantic would read each field's
annotation from a string, compiling every one of them (about 2 ms of each command's
start-up); evaluated by the interpreter, they cost nothing.
"""

import difflib
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from trigger_engine.config.builtin import BUILTIN
from trigger_engine.config.fields import (
    COUNT_MAX,
    HEADER_NAME_RE,
    PSYCOPG_URLS,
    QUERY_NAME_RE,
    RESERVED_HEADERS,
    TRIGGER_NAME_RE,
    AccountNameLength,
    EventTypeLength,
    Interval,
    Lease,
    Loc,
    PauseAfter,
    Retention,
    RetryStep,
    ShutdownGrace,
    SinkNameLength,
    Timeout,
    check_base_url,
    check_database_scheme,
    check_dotted,
    check_header_value,
    check_key,
    check_name,
    check_retry_steps,
    check_sink_url,
    check_update_fields,
    non_empty,
    param_value,
    psycopg_installed,
    too_long,
)
from trigger_engine.core.durations import show
from trigger_engine.core.engine_events import ENGINE_EVENT_TYPES
from trigger_engine.core.redact import path_secret, url_secrets
from trigger_engine.core.registry import matches
from trigger_engine.core.retry import DEFAULT_SCHEDULE
from trigger_engine.core.signing import SECRET_PREFIX, secret_key
from trigger_engine.states import TRIGGER_NAME_MAX

# A key path in the configuration, e.g. ("sinks", 1, "retry", "schedule").
# --- errors raised by validators


class LocatedError(ValueError):
    """A validation problem at a key path of our choosing (pydantic would only know the parent).

    With ``with_path`` the user reads ``"{key path}: {message}"``, else the message alone.
    """

    def __init__(self, loc: Loc, message: str, *, with_path: bool = True) -> None:
        super().__init__(message)
        self.loc = loc
        self.with_path = with_path


# Raised by Config when the table is empty, and by diagnostics when the key is missing.
NO_ACCOUNTS = "no accounts configured: add an [[accounts]] table with a name and an api_key"
NO_TRIGGERS = (
    "no triggers configured: add a [triggers.NAME] table (built-in triggers are "
    f"{', '.join(sorted(BUILTIN))})"
)


# --- models


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class EngineSettings(_Model):
    """``[engine]``: where state lives and how the process behaves."""

    database: str = "sqlite:///trigger-engine.db"
    listen: str | None = None
    log_format: Literal["text", "json"] = "text"
    shutdown_grace: ShutdownGrace = 30.0
    retention: Retention = 30 * 86400.0
    lease: Lease = 30.0
    # How many polls run at once; None: 4 on SQLite, 8 on PostgreSQL (scheduler.py).
    poll_workers: Annotated[StrictInt, Field(ge=1, le=256)] | None = None

    @field_validator("database")
    @classmethod
    def _database(cls, value: str) -> str:
        try:
            url = make_url(value)
        except (ArgumentError, ValueError):
            raise ValueError(
                'is not a valid SQLAlchemy database URL (e.g. "sqlite:///trigger-engine.db" '
                'or "postgresql+psycopg://user@host/dbname")'
            ) from None
        check_database_scheme(url.drivername)
        if url.drivername in PSYCOPG_URLS and not psycopg_installed():
            raise ValueError(
                "PostgreSQL needs the psycopg driver, which is not installed: "
                "pip install 'trigger-engine[postgres]'"
            )
        return value

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, sep, port = value.rpartition(":")
        bad = f'invalid address {show(value)}: use HOST:PORT, e.g. "127.0.0.1:9464"'
        if not sep or not host or not re.fullmatch(r"[0-9]{1,5}", port):
            raise ValueError(bad)
        if not 1 <= int(port) <= 65535:
            raise ValueError(f"invalid address {show(value)}: the port must be 1-65535")
        if ":" in host and not (host.startswith("[") and host.endswith("]")):
            raise ValueError(f'{bad} (an IPv6 address goes in brackets: "[::1]:9464")')
        return value


class ConsoleSettings(_Model):
    """``[console]``: the web console and the admin API on ``[engine] listen``, behind a
    token every page and API call must carry (never echoed, redacted from logs)."""

    token: SecretStr

    @model_validator(mode="before")
    @classmethod
    def _needs_token(cls, data: Any) -> Any:
        if isinstance(data, dict) and "token" not in data:
            raise LocatedError(
                ("console", "token"),
                "is required: the engine serves no console without one; set token = "
                '"${TRIGGER_ENGINE_CONSOLE_TOKEN}" and put a long random value in that '
                "variable",
            )
        return data

    @field_validator("token")
    @classmethod
    def _token(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if not raw.strip():
            raise ValueError(
                "must not be empty: every page and API call needs it (e.g. token = "
                '"${TRIGGER_ENGINE_CONSOLE_TOKEN}")'
            )
        if any(ord(c) < 0x21 or ord(c) > 0x7E for c in raw):
            raise ValueError(
                "must be printable ASCII without spaces: it travels in an HTTP header "
                "(the value is not shown)"
            )
        return value


class SourceSettings(_Model):
    """``[source]``: the Meet Alfred API."""

    base_url: Annotated[str, AfterValidator(check_base_url)] = (
        "https://app.meetalfred.com/api/integrations/zapier"
    )
    auth_param: str = "api_key"
    timeout: Timeout = 30.0

    @field_validator("auth_param")
    @classmethod
    def _auth_param(cls, value: str) -> str:
        if not QUERY_NAME_RE.fullmatch(value):
            raise ValueError(f"invalid query parameter name {show(value)}")
        return value


class Account(_Model):
    """``[[accounts]]``: one Meet Alfred organisation."""

    name: Annotated[str, AfterValidator(check_name), AccountNameLength]
    api_key: SecretStr

    @field_validator("api_key")
    @classmethod
    def _api_key(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value


class PaginationSettings(_Model):
    """``[triggers.NAME.pagination]``: page-number pagination."""

    page_param: Annotated[str, AfterValidator(non_empty)] = "page"
    per_page_param: Annotated[str, AfterValidator(non_empty)] = "per_page"
    per_page: Annotated[StrictInt, Field(ge=1, le=10_000)] = 100
    first_page: Literal[0, 1] = 1
    max_pages: Annotated[StrictInt, Field(ge=1, le=100_000)] = 100


class TriggerSettings(_Model):
    """``[triggers.NAME]``: one polled endpoint; built-in names get their defaults filled in."""

    name: str
    interval: Interval
    enabled: StrictBool = True
    on_first_poll: Literal["seed", "emit"] = "seed"
    path: str
    key: Annotated[tuple[str, ...], BeforeValidator(check_key)]
    items_path: Annotated[str | None, AfterValidator(check_dotted)] = None
    params: dict[str, Annotated[str, BeforeValidator(param_value)]] = Field(default_factory=dict)
    event: Annotated[str, AfterValidator(non_empty), EventTypeLength]
    pagination: PaginationSettings | None = None
    update_fields: Annotated[tuple[str, ...] | None, BeforeValidator(check_update_fields)] = None
    max_new_per_poll: Annotated[StrictInt, Field(ge=1, le=COUNT_MAX)] | None = None
    pause_after: PauseAfter = 7 * 86400.0
    pause_after_failures: Annotated[StrictInt, Field(ge=0, le=COUNT_MAX)] = 20

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            return data
        name: str = data["name"]
        defaults = BUILTIN.get(name)
        if defaults is not None:
            filled = {
                "interval": defaults.interval,
                "path": defaults.path,
                "key": defaults.key,
                "event": defaults.event,
                "items_path": defaults.items_path,
                "update_fields": defaults.update_fields,
            }
            filled.update(data)
            return filled
        missing = [f for f in ("path", "key", "event", "interval") if f not in data]
        if missing:
            close = difflib.get_close_matches(name, BUILTIN, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(
                f"unknown trigger '{name}'{hint}: built-in triggers are "
                f"{', '.join(sorted(BUILTIN))}; a custom trigger needs path, key, event and "
                f"interval (missing: {', '.join(missing)})"
            )
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not TRIGGER_NAME_RE.fullmatch(value):
            raise ValueError("must use lowercase letters, digits and '_' only")
        if len(value) > TRIGGER_NAME_MAX:
            raise ValueError(too_long(TRIGGER_NAME_MAX, value))
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f'must start with "/" (e.g. "/leads"), not {show(value)}')
        return value


class RetrySettings(_Model):
    """``[sinks.retry]``: the delays between delivery attempts."""

    schedule: Annotated[tuple[RetryStep, ...], BeforeValidator(check_retry_steps)] = (
        DEFAULT_SCHEDULE
    )


def _check_secret(value: SecretStr | None) -> SecretStr | None:
    """A signing secret: ``whsec_`` + the base64 of at least 16 bytes (never echoed)."""
    if value is None:
        return None
    raw = value.get_secret_value()
    try:
        key = secret_key(raw) if raw.startswith(SECRET_PREFIX) else b""
    except ValueError:
        key = b""
    if len(key) < 16:
        raise ValueError(
            'must be "whsec_" followed by the base64 of at least 16 random bytes '
            "(the value is not shown; 'trigger-engine sinks secret' makes one)"
        )
    return value


def _iso_time(value: Any) -> Any:
    """An ISO 8601 time (a TOML date-time, or a string), UTC unless it says otherwise."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(
                f'must be an ISO 8601 time, e.g. "2026-12-31T00:00:00Z", not {show(value)}'
            ) from None
    if not isinstance(value, datetime):
        raise ValueError('must be an ISO 8601 time, e.g. "2026-12-31T00:00:00Z"')
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Sink(_Model):
    """``[[sinks]]``: one webhook receiver."""

    name: Annotated[str, AfterValidator(check_name), SinkNameLength]
    url: Annotated[str, AfterValidator(check_sink_url)]
    events: tuple[Annotated[str, AfterValidator(non_empty)], ...] | None = None
    secret: Annotated[SecretStr | None, AfterValidator(_check_secret)] = None
    # Secret rotation: until previous_secret_until, webhooks carry a second signature
    # made with the previous secret (core/signing.py sign_all).
    previous_secret: Annotated[SecretStr | None, AfterValidator(_check_secret)] = None
    previous_secret_until: Annotated[datetime | None, BeforeValidator(_iso_time)] = None
    headers: dict[str, Annotated[SecretStr, AfterValidator(check_header_value)]] = Field(
        default_factory=dict
    )
    timeout: Timeout = 15.0
    format: Literal["envelope", "raw", "slack"] = "envelope"
    retry: RetrySettings = Field(default_factory=RetrySettings)
    max_in_flight: Annotated[StrictInt, Field(ge=1, le=256)] = 8

    def signing_secrets(self, now: datetime) -> tuple[str, ...]:
        """The secrets a webhook sent at ``now`` is signed with: the secret, and the
        previous one while ``previous_secret_until`` is ahead (none without a secret)."""
        if self.secret is None:
            return ()
        found = [self.secret.get_secret_value()]
        until = self.previous_secret_until
        if self.previous_secret is not None and until is not None and now < until:
            found.append(self.previous_secret.get_secret_value())
        return tuple(found)

    @field_validator("events")
    @classmethod
    def _events(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and not value:
            raise ValueError(
                "must list at least one event type (leave it out to receive every event type)"
            )
        return value

    @field_validator("headers", mode="before")
    @classmethod
    def _header_names(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for header in value:
                if not isinstance(header, str) or not HEADER_NAME_RE.fullmatch(header):
                    raise ValueError(f"invalid header name {show(header)}")
                if header.lower() in RESERVED_HEADERS:
                    raise ValueError(f"header '{header}' is set by the engine and cannot be set")
        return value


class Config(_Model):
    """The whole configuration. Build it with :func:`load_config` or :func:`config_from_dict`."""

    engine: EngineSettings = Field(default_factory=EngineSettings)
    source: SourceSettings = Field(default_factory=SourceSettings)
    accounts: tuple[Account, ...]
    triggers: dict[str, TriggerSettings]
    sinks: tuple[Sink, ...] = ()
    console: ConsoleSettings | None = None
    path: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _name_triggers(cls, data: Any) -> Any:
        """Each trigger's name is its table key: fill it in for the trigger model."""
        if not isinstance(data, dict) or not isinstance(data.get("triggers"), dict):
            return data
        triggers: dict[Any, Any] = {}
        for name, table in data["triggers"].items():
            if not isinstance(name, str) or not TRIGGER_NAME_RE.fullmatch(name):
                raise LocatedError(
                    ("triggers", str(name)),
                    f"invalid trigger name {show(name)}: use lowercase letters, digits and "
                    "'_' only",
                )
            if len(name) > TRIGGER_NAME_MAX:
                raise LocatedError(
                    ("triggers", name),
                    f"triggers: the trigger name {show(name)} " + too_long(TRIGGER_NAME_MAX, name),
                    with_path=False,
                )
            if isinstance(table, dict):
                if "name" in table and table["name"] != name:
                    raise LocatedError(
                        ("triggers", name, "name"),
                        f"a trigger's name is its table name ('{name}'); remove this key",
                    )
                table = {**table, "name": name}
            elif isinstance(table, TriggerSettings) and table.name != name:
                raise LocatedError(
                    ("triggers", name), f"holds the settings of trigger '{table.name}'"
                )
            triggers[name] = table
        return {**data, "triggers": triggers}

    @model_validator(mode="after")
    def _whole(self) -> "Config":
        if not self.accounts:
            raise LocatedError(("accounts",), NO_ACCOUNTS, with_path=False)
        if not self.triggers:
            raise LocatedError(("triggers",), NO_TRIGGERS, with_path=False)
        if self.console is not None and self.engine.listen is None:
            raise LocatedError(
                ("console",),
                '[console] needs [engine] listen (HOST:PORT, e.g. "127.0.0.1:9464"): the '
                "console and the admin API are served there",
                with_path=False,
            )
        _no_duplicates("account", [a.name for a in self.accounts])
        _no_duplicates("sink", [s.name for s in self.sinks])
        for name, trigger in self.triggers.items():
            if self.source.auth_param in trigger.params:
                raise LocatedError(
                    ("triggers", name, "params", self.source.auth_param),
                    "conflicts with [source] auth_param: the account's api_key is added to "
                    "every request",
                )
        items = sorted(
            {t.event for t in self.triggers.values()} | {d.event for d in BUILTIN.values()}
        )
        known = [*items, *ENGINE_EVENT_TYPES]
        for i, sink in enumerate(self.sinks):
            _check_rotation(i, sink)
            for j, event in enumerate(sink.events or ()):
                if "*" in event:
                    if not any(matches(event, t) for t in known):
                        raise LocatedError(
                            ("sinks", i, "events", j),
                            f"the pattern '{event}' matches no event type; the event types "
                            f"are {', '.join(known)} ('engine.*' matches the engine's own)",
                        )
                elif event not in known:
                    close = difflib.get_close_matches(event, known, n=1)
                    hint = f" (did you mean '{close[0]}'?)" if close else ""
                    raise LocatedError(
                        ("sinks", i, "events", j),
                        f"unknown event type '{event}'{hint}; the event types are "
                        f"{', '.join(known)} ('engine.*' matches the engine's own)",
                    )
        return self

    def database_url(self) -> str:
        """``engine.database``; a relative SQLite path is resolved against the file's directory,
        and a plain ``postgresql://`` URL names the psycopg driver (SQLAlchemy 2.0 would take
        psycopg2 for it, which the engine does not install)."""
        url = make_url(self.engine.database)
        if url.drivername == "postgresql":
            return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
        database = url.database
        if (
            not url.drivername.startswith("sqlite")
            or not database
            or database == ":memory:"
            or database.startswith("file:")
            or Path(database).is_absolute()
        ):
            return self.engine.database
        base = self.path.absolute().parent if self.path is not None else Path.cwd()
        resolved = (base / database).resolve()
        return url.set(database=str(resolved)).render_as_string(hide_password=False)

    def secrets(self) -> list[str]:
        """Every secret string in the configuration, for the log redaction filter: API keys,
        sink secrets and header values, and the credentials in ``source.base_url`` and the
        sink URLs (userinfo, query values: :func:`~trigger_engine.core.redact.url_secrets`)."""
        found: list[str] = []
        for account in self.accounts:
            found.append(account.api_key.get_secret_value())
        for sink in self.sinks:
            for secret in (sink.secret, sink.previous_secret):
                if secret is not None:
                    raw = secret.get_secret_value()
                    found += [raw, raw.removeprefix(SECRET_PREFIX)]
            found += [v.get_secret_value() for v in sink.headers.values()]
        found += url_secrets(self.source.base_url)
        for sink in self.sinks:
            found += url_secrets(sink.url)
            if sink.format == "slack" and (path := path_secret(sink.url)):
                found.append(path)  # a Slack webhook's token is its path
        if self.console is not None:
            found.append(self.console.token.get_secret_value())
        return list(dict.fromkeys(s for s in found if s))

    def sink(self, name: str) -> Sink:
        """The sink called ``name``; KeyError if there is none."""
        for sink in self.sinks:
            if sink.name == name:
                return sink
        raise KeyError(name)

    def account(self, name: str) -> Account:
        """The account called ``name``; KeyError if there is none."""
        for account in self.accounts:
            if account.name == name:
                return account
        raise KeyError(name)


def _check_rotation(i: int, sink: Sink) -> None:
    """``previous_secret`` needs ``secret`` and ``previous_secret_until``, and the other
    way round."""
    if sink.previous_secret is not None and sink.secret is None:
        raise LocatedError(
            ("sinks", i, "previous_secret"),
            "needs secret (the new one) beside it: webhooks are signed with both until "
            "previous_secret_until",
        )
    if sink.previous_secret is not None and sink.previous_secret_until is None:
        raise LocatedError(
            ("sinks", i, "previous_secret"),
            "needs previous_secret_until beside it: the ISO 8601 time until which webhooks "
            'carry its signature too, e.g. "2026-12-31T00:00:00Z"',
        )
    if sink.previous_secret_until is not None and sink.previous_secret is None:
        raise LocatedError(
            ("sinks", i, "previous_secret_until"), "goes with previous_secret, which is not set"
        )


def _no_duplicates(kind: str, names: list[str]) -> None:
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise LocatedError(
                (f"{kind}s", i, "name"),
                f"duplicate {kind} name '{name}' (also used by {kind}s[{seen[name]}])",
            )
        seen[name] = i
