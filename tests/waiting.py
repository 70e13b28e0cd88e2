"""Waiting for a condition in the end-to-end tests: a free port to listen on, and a poll of a
check until it holds (a condition with a deadline, never a sleep for luck)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

import httpx

T = TypeVar("T")


def free_port() -> int:
    """A loopback port nothing listens on now (for a daemon's ``[engine] listen``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        assert isinstance(port, int)
        return port


def wait_until(check: Callable[[], T], timeout: float = 30.0, what: str = "the condition") -> T:
    """Call ``check`` every 50 ms until it returns something truthy, and return that. A
    transport error counts as "not yet" (a daemon that is not listening yet); past
    ``timeout`` seconds the test fails naming ``what`` it waited for."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except httpx.TransportError:
            value = None  # type: ignore[assignment]
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout}s for {what}")
        time.sleep(0.05)
