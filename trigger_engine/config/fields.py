"""The field types and small checks the configuration models are built from: durations
and their ranges, names and their lengths, URLs, key paths, header values, the supported
databases, and whether the PostgreSQL driver is installed. Each check returns the value or
raises ``ValueError`` with the reason (pydantic adds the key path).

Every duration, count and name has a range, here, so that a value that would overflow or
not fit later (a ``timedelta``, a database column) is refused when the file is loaded; the
README's configuration reference and ``config.example.toml`` give the same ranges.
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    SecretStr,
)

from trigger_engine.core.durations import DAY, HOUR, DurationRange, show
from trigger_engine.states import ACCOUNT_NAME_MAX, EVENT_TYPE_MAX, SINK_NAME_MAX, TRIGGER_NAME_MAX

Loc = tuple[str | int, ...]


# --- durations: each key's range

INTERVAL = DurationRange(low=0.1, high=30 * DAY, positive=True)  # triggers.T.interval
TIMEOUT = DurationRange(high=HOUR, positive=True)  # source.timeout, sinks[].timeout
LEASE = DurationRange(high=DAY, positive=True)  # engine.lease
SHUTDOWN_GRACE = DurationRange(high=HOUR)  # engine.shutdown_grace (0: stop at once)
RETENTION = DurationRange(high=3650 * DAY, positive=True)  # engine.retention: ~10 years
PAUSE_AFTER = DurationRange(high=365 * DAY, positive=True)  # triggers.T.pause_after
RETRY_STEP = DurationRange(high=7 * DAY, positive=True)  # each of sinks[].retry.schedule

Interval = Annotated[float, BeforeValidator(INTERVAL.check)]
Timeout = Annotated[float, BeforeValidator(TIMEOUT.check)]
Lease = Annotated[float, BeforeValidator(LEASE.check)]
ShutdownGrace = Annotated[float, BeforeValidator(SHUTDOWN_GRACE.check)]
Retention = Annotated[float, BeforeValidator(RETENTION.check)]
PauseAfter = Annotated[float, BeforeValidator(PAUSE_AFTER.check)]
RetryStep = Annotated[float, BeforeValidator(RETRY_STEP.check)]

# --- counts

RETRY_STEPS_MAX = 50  # sinks[].retry.schedule: at most this many delays
COUNT_MAX = 1_000_000  # triggers.T.max_new_per_poll, triggers.T.pause_after_failures


def check_retry_steps(value: object) -> object:
    """``sinks[].retry.schedule`` has at most RETRY_STEPS_MAX delays (checked before the
    delays themselves, so a huge array is refused at once)."""
    if isinstance(value, list | tuple) and len(value) > RETRY_STEPS_MAX:
        raise ValueError(f"must have at most {RETRY_STEPS_MAX} delays, not {len(value)}")
    return value


# --- names: no longer than the database columns that hold them


def at_most(limit: int) -> AfterValidator:
    """A string of at most ``limit`` characters (a name the database stores)."""

    def check(value: str) -> str:
        if len(value) > limit:
            raise ValueError(too_long(limit, value))
        return value

    return AfterValidator(check)


def too_long(limit: int, value: str) -> str:
    """The reason a name is refused: ``must be at most 200 characters long (it has 300)``."""
    return f"must be at most {limit} characters long (it has {len(value)})"


AccountNameLength = at_most(ACCOUNT_NAME_MAX)
SinkNameLength = at_most(SINK_NAME_MAX)
TriggerNameLength = at_most(TRIGGER_NAME_MAX)
EventTypeLength = at_most(EVENT_TYPE_MAX)

# --- small checks

NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
TRIGGER_NAME_RE = re.compile(r"[a-z0-9_]+")
HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
QUERY_NAME_RE = re.compile(r"[A-Za-z0-9_.~\[\]-]+")
# Headers the engine sets itself on every delivery; a sink may not override them.
RESERVED_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "host",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
)


def check_name(value: str) -> str:
    """An account or sink name: letters, digits, '_', '.' and '-'."""
    if not NAME_RE.fullmatch(value):
        raise ValueError(f"invalid name {show(value)}: use letters, digits, '_', '.' and '-' only")
    return value


def non_empty(value: str) -> str:
    """A string with something in it besides white space."""
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def http_url(value: str, *, allow_query: bool) -> str:
    """An http(s) URL with a host (and, unless ``allow_query``, no query or fragment)."""
    try:
        parts = urlsplit(value)
        host = parts.hostname
        _ = parts.port  # raises ValueError for a bad port
    except ValueError:
        host = None
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not host:
        raise ValueError("must be an http:// or https:// URL with a host")
    if not allow_query and (parts.query or parts.fragment):
        raise ValueError(
            "must not contain a query string or fragment (put query parameters in a "
            "trigger's params)"
        )
    return value


def check_base_url(value: str) -> str:
    """``source.base_url``: an http(s) URL without a query, trailing slash dropped."""
    return http_url(value, allow_query=False).rstrip("/")


def check_sink_url(value: str) -> str:
    """A sink's URL: an http(s) URL (a query may carry a token)."""
    return http_url(value, allow_query=True)


def check_key(value: object) -> object:
    """``key = "id"`` or ``key = ["campaign", "person.id"]`` → a tuple of dotted paths."""
    if isinstance(value, str):
        value = (value,)
    if isinstance(value, list | tuple):
        if not value:
            raise ValueError("must name at least one field")
        for item in value:
            if isinstance(item, str) and (not item or any(not p for p in item.split("."))):
                raise ValueError(
                    f"invalid field {show(item)}: use a field name, dotted for nested "
                    'fields (e.g. "id" or "person.id")'
                )
        return tuple(value)
    return value


def check_update_fields(value: object) -> object:
    """``update_fields``: unset, or field paths as for ``key``."""
    return None if value is None else check_key(value)


def check_dotted(value: str | None) -> str | None:
    """``items_path``: unset, or dotted field names."""
    if value is not None and (not value or any(not p for p in value.split("."))):
        raise ValueError(f'invalid path {show(value)}: use dotted field names, e.g. "data.items"')
    return value


def param_value(value: object) -> object:
    """A query parameter's value as the request sends it: a string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value
    raise ValueError("must be a string, a number or a boolean")


def check_header_value(value: SecretStr) -> SecretStr:
    """A header value without a line break (no header injection)."""
    raw = value.get_secret_value()
    if "\r" in raw or "\n" in raw:
        raise ValueError("must not contain a line break")
    return value


# --- the database

# The databases the engine runs on, and the drivers it uses for them ("" is the plain
# scheme: "sqlite://..." is Python's sqlite3; "postgresql://..." is read as
# "postgresql+psycopg://..." by Config.database_url, whatever SQLAlchemy's default driver).
DATABASE_DRIVERS = {"sqlite": ("", "pysqlite"), "postgresql": ("", "psycopg")}
SUPPORTED_DATABASES = (
    'only SQLite ("sqlite:///FILE") and PostgreSQL ("postgresql+psycopg://USER@HOST/DBNAME") '
    "are supported"
)
DRIVER_HINTS = {
    "sqlite": 'SQLite is used through Python\'s sqlite3: write "sqlite:///FILE"',
    "postgresql": 'PostgreSQL is used through the psycopg driver: write "postgresql+psycopg://..."',
}


def check_database_scheme(drivername: str) -> None:
    """``engine.database``'s scheme (``sqlite``, ``postgresql+psycopg``, ...) is one of the
    supported databases and drivers; ``ValueError`` saying which are, otherwise. Only the
    scheme is ever shown (the rest of the URL may hold a password)."""
    backend, _, driver = drivername.partition("+")
    drivers = DATABASE_DRIVERS.get(backend)
    if drivers is None:
        raise ValueError(f"{SUPPORTED_DATABASES}, not {show(drivername)}")
    if driver not in drivers:
        raise ValueError(f"{DRIVER_HINTS[backend]} (not {show(drivername)})")


# psycopg is an extra (``trigger-engine[postgres]``): URLs of these drivers need it.
PSYCOPG_URLS = frozenset({"postgresql", "postgresql+psycopg"})


def psycopg_installed() -> bool:
    """Whether the psycopg driver can be imported (asked only when the URL is PostgreSQL's)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return False
    return True
