"""A real local webhook receiver for tests: records every request, answers by plan."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

import orjson


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> object:
        return orjson.loads(self.body)


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    body: bytes = b"ok"


class _QuietServer(ThreadingHTTPServer):
    # socketserver's default listen backlog is 5: a burst of new connections (several nodes,
    # max_in_flight each) overflows it, and the kernel retries the handshake 1 s later,
    # which looks like a slow receiver (and a timed-out attempt, sent again)
    request_queue_size = 128

    def handle_error(self, request: object, client_address: object) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a sender that was killed or gave up: expected in crash tests
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class Receiver:
    """``with Receiver() as r: ... r.url ... r.requests``.

    ``plan(received) -> Answer`` decides each answer (default: 200 at once).
    """

    def __init__(self, plan: Callable[[Received], Answer] | None = None) -> None:
        self.plan = plan or (lambda _r: Answer())
        self.requests: list[Received] = []
        self.answering = 0  # requests received and not answered yet (in flight at the sender)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._closing = threading.Event()  # ends the answers' delays when the receiver closes
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                got = Received(
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                )
                answer = receiver.plan(got)
                with receiver._changed:
                    receiver.requests.append(got)
                    receiver.answering += 1
                    receiver._changed.notify_all()
                try:
                    if answer.delay:
                        receiver._closing.wait(answer.delay)
                    self.send_response(answer.status)
                    for name, value in answer.headers:
                        self.send_header(name, value)
                    self.send_header("content-length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)
                except ConnectionError:  # the sender went away (killed, or gave up waiting)
                    self.close_connection = True
                finally:
                    with receiver._changed:
                        receiver.answering -= 1
                        receiver._changed.notify_all()

            def log_message(self, *_args: object) -> None:
                pass

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        """Block until at least ``count`` requests arrived (a condition, not a sleep)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"expected {count} requests within {timeout}s, got {len(self.requests)}"
                    )
                self._changed.wait(left)
            return list(self.requests)
