"""A wall-clock deadline for one HTTP request, kept by every socket read and write.

httpx's timeouts bound each network operation, not the request (encode/httpx#1450): an
upstream that sends a header byte a second, or ``100 Continue`` forever, never trips them,
and the poll that waits on it never ends. :func:`deadline` sets when the current request
must be over; :class:`DeadlineBackend`, the httpcore network backend under the source's
client (``polling/transport.py``), gives every connect, TLS handshake, read and write the
smaller of its own timeout and the time left, and raises httpcore's timeout for that
operation once none is left. httpx maps it to its own (``httpx.ReadTimeout``, ...): the
caller sees the same exception as for any timeout.

The deadline lives in a context variable: each poll runs its requests on its own worker
thread, which has its own context, and a connection serves one request at a time, so the
sockets of a request read the deadline of the thread that sent it.

What no socket timeout can bound: name resolution (``getaddrinfo``, inside the connect) is
bounded by the system resolver's own timeout (``options timeout:`` in resolv.conf); a name
with several addresses that all drop packets is given what is left once per address.
"""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Any

import httpcore

_deadline: ContextVar[float | None] = ContextVar("trigger_engine_deadline", default=None)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Requests sent in this block (this thread) end within ``seconds`` from now, or raise
    a timeout. Nested blocks keep the earlier deadline."""
    at = time.monotonic() + seconds
    outer = _deadline.get()
    token = _deadline.set(at if outer is None else min(at, outer))
    try:
        yield
    finally:
        _deadline.reset(token)


def time_left(timeout: float | None, expired: type[Exception]) -> float | None:
    """The timeout one socket operation may use: ``timeout``, cut to the time left before
    the deadline; raises ``expired`` once the deadline has passed (no deadline set:
    ``timeout`` as it is)."""
    at = _deadline.get()
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise expired("the request's deadline has passed")
    return left if timeout is None else min(timeout, left)


class DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every operation keeps the current deadline.

    A write is one ``send`` for the requests we make (a GET of a few hundred bytes); a
    TLS handshake is one call, bounded as a whole by its timeout (CPython's ssl module).
    """

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        """Read at most ``max_bytes``, waiting no later than the deadline."""
        return self._stream.read(max_bytes, time_left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """Send ``buffer``, waiting no later than the deadline."""
        self._stream.write(buffer, time_left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        """Close the underlying stream."""
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        """The TLS handshake, finished before the deadline; the TLS stream keeps it too."""
        left = time_left(timeout, httpcore.ConnectTimeout)
        return DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, left))

    def get_extra_info(self, info: str) -> Any:
        """What the underlying stream says (``socket``, ``is_readable``, ...)."""
        return self._stream.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's network backend (blocking sockets) whose streams keep the deadline."""

    def __init__(self, backend: httpcore.NetworkBackend | None = None) -> None:
        self._backend = backend if backend is not None else httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        """Connect, within the deadline; the stream keeps it."""
        left = time_left(timeout, httpcore.ConnectTimeout)
        stream = self._backend.connect_tcp(host, port, left, local_address, socket_options)
        return DeadlineStream(stream)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        """Connect to a Unix socket, within the deadline; the stream keeps it."""
        left = time_left(timeout, httpcore.ConnectTimeout)
        return DeadlineStream(self._backend.connect_unix_socket(path, left, socket_options))

    def sleep(self, seconds: float) -> None:
        """Sleep (httpcore's connect retries; we make none)."""
        self._backend.sleep(seconds)
