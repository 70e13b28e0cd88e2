"""Faults: the failures a test queues on the simulator, and their JSON form for ``/_control/fault``.

What a fault does when served is described at the top of :mod:`trigger_engine.sandbox.simulator`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Final

from trigger_engine.sandbox.records import KINDS

LIST_PATHS: Final = tuple(f"/{kind}" for kind in KINDS)


@dataclass
class Fault:
    """An injected failure, served instead of the normal answer."""

    status: int = 500  # HTTP status to return
    count: int = 1  # how many requests it applies to (then it is used up)
    retry_after: str | None = None  # value of a Retry-After header, if any
    body: bytes | None = None  # raw body; None: {"error": ...} (or, with a 2xx, a pure delay)
    content_type: str = "application/json"
    delay: float = 0.0  # seconds to wait before answering
    paths: tuple[str, ...] | None = None  # None: every list endpoint; else e.g. ("/leads",)

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 599:
            raise ValueError(f"fault status {self.status} is not an HTTP status (100-599)")
        if self.count < 1:
            raise ValueError(f"fault count must be at least 1, not {self.count}")
        if self.delay < 0:
            raise ValueError(f"fault delay must not be negative, not {self.delay}")
        if self.paths is not None:
            self.paths = tuple(_canonical_path(path) for path in self.paths)

    def applies_to(self, path: str) -> bool:
        """Whether this fault answers a request to ``path`` (a canonical list path)."""
        return self.paths is None or path in self.paths

    @property
    def is_pure_delay(self) -> bool:
        """A 2xx without a body: the normal answer, served late."""
        return self.body is None and 200 <= self.status < 300


def _canonical_path(path: str) -> str:
    """``"leads/"`` -> ``"/leads"``; refuses anything but a list endpoint."""
    canonical = "/" + path.strip("/")
    if canonical not in LIST_PATHS:
        known = ", ".join(LIST_PATHS)
        raise ValueError(f"fault path {path!r} is not a list endpoint (one of {known})")
    return canonical


_FAULT_FIELDS: Final = frozenset(field.name for field in fields(Fault))


def fault_from_json(data: object) -> Fault:
    """Build a Fault from the JSON object posted to ``/_control/fault`` (``body`` a string)."""
    if not isinstance(data, dict):
        raise ValueError("the fault must be a JSON object")
    unknown = sorted(set(data) - _FAULT_FIELDS)
    if unknown:
        noun = "field" if len(unknown) == 1 else "fields"
        raise ValueError(f"unknown fault {noun} {', '.join(unknown)}")
    kwargs: dict[str, Any] = {}
    for name in ("status", "count"):
        if name in data:
            value = data[name]
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"fault {name} must be an integer")
            kwargs[name] = value
    if "delay" in data:
        delay = data["delay"]
        if not isinstance(delay, int | float) or isinstance(delay, bool):
            raise ValueError("fault delay must be a number of seconds")
        kwargs["delay"] = float(delay)
    if data.get("retry_after") is not None:
        retry_after = data["retry_after"]
        if not isinstance(retry_after, str | int) or isinstance(retry_after, bool):
            raise ValueError("fault retry_after must be a string or an integer")
        kwargs["retry_after"] = str(retry_after)
    if data.get("body") is not None:
        if not isinstance(data["body"], str):
            raise ValueError("fault body must be a string")
        kwargs["body"] = data["body"].encode()
    if "content_type" in data:
        if not isinstance(data["content_type"], str):
            raise ValueError("fault content_type must be a string")
        kwargs["content_type"] = data["content_type"]
    if data.get("paths") is not None:
        paths = data["paths"]
        if not isinstance(paths, list) or not all(isinstance(path, str) for path in paths):
            raise ValueError('fault paths must be a list of strings such as ["/leads"]')
        kwargs["paths"] = tuple(paths)
    return Fault(**kwargs)
