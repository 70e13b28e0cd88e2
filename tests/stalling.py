"""A raw-socket HTTP server that never finishes answering, for deadline tests.

Each connection gets its request read, then one of these answers, forever (until close):

    drip-headers   ``HTTP/1.1 200 OK`` then one header byte every ``every`` seconds
    continue       ``HTTP/1.1 100 Continue`` (an interim response) every ``every`` seconds
    drip-body      complete headers (``content-length`` 1 MiB) then one body byte every
                   ``every`` seconds
    json           ``[]`` at once, then nothing (the control case)

No single read waits longer than ``every``, so per-operation timeouts never trip: only a
deadline on the whole request ends it. ``close()`` ends every connection at once (their
waits are on an event, never a sleep), so a client still blocked on one is released.
With ``tls`` (a server ``ssl.SSLContext``) it speaks HTTPS.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from types import TracebackType

STATUS = b"HTTP/1.1 200 OK\r\n"
INTERIM = b"HTTP/1.1 100 Continue\r\n\r\n"
BODY_HEADERS = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1048576\r\n\r\n["
)


def _drip_headers() -> Iterator[bytes]:
    yield STATUS
    while True:
        yield b"x"  # a header name that never ends


def _interim_forever() -> Iterator[bytes]:
    while True:
        yield INTERIM


def _drip_body() -> Iterator[bytes]:
    yield BODY_HEADERS
    while True:
        yield b" "


def _json() -> Iterator[bytes]:
    yield b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n[]"
    while True:
        yield b""


ANSWERS = {
    "drip-headers": _drip_headers,
    "continue": _interim_forever,
    "drip-body": _drip_body,
    "json": _json,
}


class StallingServer:
    """``with StallingServer("drip-headers") as s: ... s.url ... s.requests.wait(5)``."""

    def __init__(self, mode: str, *, every: float = 1.0, tls: ssl.SSLContext | None = None) -> None:
        self._answer = ANSWERS[mode]
        self._tls = tls
        self.every = every
        self.requests = threading.Event()  # set when a first request has been read
        self.connections = 0
        self._closing = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self._sock.getsockname()[1]}"

    def __enter__(self) -> StallingServer:
        accept = threading.Thread(target=self._accept, name="stalling-accept", daemon=True)
        accept.start()
        self._threads.append(accept)
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop accepting and end every connection; returns once every thread has ended."""
        self._closing.set()
        self._sock.close()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(5)

    def _accept(self) -> None:
        self._sock.settimeout(0.1)
        while not self._closing.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            with self._lock:
                self.connections += 1
                self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            if self._tls is not None:
                conn = self._tls.wrap_socket(conn, server_side=True)
            conn.recv(65536)  # the request (small: headers and a short body)
            self.requests.set()
            for piece in self._answer():
                conn.sendall(piece)
                if self._closing.wait(self.every):
                    return
        except OSError:
            return  # the client gave up: what a deadline should make it do
        finally:
            conn.close()
