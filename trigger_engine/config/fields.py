"""The field types and small checks the configuration models are built from: durations,
names, URLs, key paths, header values, and whether the PostgreSQL driver is installed.
Each check returns the value or raises ``ValueError`` with the reason (pydantic adds the
key path)."""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    SecretStr,
)

from trigger_engine.core.durations import parse_duration, show

Loc = tuple[str | int, ...]


# --- durations


def positive(seconds: float) -> float:
    """A duration that must be more than zero."""
    if seconds <= 0:
        raise ValueError("must be a duration greater than zero")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), AfterValidator(positive)]

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


# psycopg is an extra (``trigger-engine[postgres]``): URLs of these drivers need it.
PSYCOPG_URLS = frozenset({"postgresql", "postgresql+psycopg"})


def psycopg_installed() -> bool:
    """Whether the psycopg driver can be imported (asked only when the URL is PostgreSQL's)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return False
    return True
