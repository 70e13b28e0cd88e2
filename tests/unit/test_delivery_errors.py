"""Tests for trigger_engine.delivery.failures: a failed attempt is one sentence a person
reads, naming the receiver by host and port, never by its URL (which may carry a token);
and the start of a receiver's answer as it is kept."""

from __future__ import annotations

import errno
import ssl

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from trigger_engine.delivery.attempt import response_text
from trigger_engine.delivery.failures import describe, http_error

URL_ = "https://user:pw-5ecret@hooks.example.com/alfred?token=tok-5ecret-9f2c"
LOCAL = "http://127.0.0.1:46917/hook"


def key(host: str, port: int) -> ConnectionKey:
    return ConnectionKey(host, port, False, True, None, None, None)


def os_error(code: int) -> OSError:
    return OSError(code, __import__("os").strerror(code))


def tls_error(kind: type[ssl.SSLError], reason: str, **attrs: str) -> ssl.SSLError:
    """A TLS error as the ssl module raises it: the reason code and the messages set."""
    exc = kind(1, f"[SSL: {reason}] {reason.lower().replace('_', ' ')} (_ssl.c:1006)")
    exc.reason = reason  # type: ignore[misc]
    for name, value in attrs.items():
        setattr(exc, name, value)
    return exc


def response_error(message: str) -> aiohttp.ClientResponseError:
    info = aiohttp.RequestInfo(URL(URL_), "POST", CIMultiDictProxy(CIMultiDict()), URL(URL_))
    return aiohttp.ClientResponseError(info, (), status=400, message=message)


@pytest.mark.parametrize(
    ("exc", "url", "expected"),
    [
        pytest.param(
            aiohttp.ClientConnectorError(key("127.0.0.1", 46917), ConnectionRefusedError(111, "x")),
            LOCAL,
            "connection refused by 127.0.0.1:46917",
            id="refused",
        ),
        pytest.param(TimeoutError(), URL_, "timed out after 15s", id="timeout"),
        pytest.param(
            aiohttp.ServerTimeoutError("Timeout on reading data from socket"),
            URL_,
            "timed out after 15s",
            id="aiohttp-read-timeout",
        ),
        pytest.param(
            aiohttp.ClientConnectorDNSError(
                key("hooks.example.com", 443), OSError(-2, "Name or service not known")
            ),
            URL_,
            "DNS lookup failed for hooks.example.com",
            id="dns",
        ),
        pytest.param(
            aiohttp.ClientConnectorSSLError(
                key("hooks.example.com", 443),
                tls_error(ssl.SSLError, "WRONG_VERSION_NUMBER"),
            ),
            URL_,
            "TLS handshake failed with hooks.example.com: wrong version number",
            id="tls-handshake",
        ),
        pytest.param(
            aiohttp.ClientConnectorCertificateError(
                key("hooks.example.com", 443),
                tls_error(
                    ssl.SSLCertVerificationError,
                    "CERTIFICATE_VERIFY_FAILED",
                    verify_message="self-signed certificate",
                ),
            ),
            URL_,
            "TLS certificate of hooks.example.com not accepted: self-signed certificate",
            id="tls-certificate",
        ),
        pytest.param(
            aiohttp.ClientConnectorError(key("127.0.0.1", 46917), os_error(errno.ECONNRESET)),
            LOCAL,
            "connection reset by 127.0.0.1:46917",
            id="reset-connecting",
        ),
        pytest.param(
            aiohttp.ClientOSError(errno.ECONNRESET, "Connection reset by peer"),
            URL_,
            "connection reset by hooks.example.com:443",
            id="reset-later",
        ),
        pytest.param(
            aiohttp.ClientConnectorError(key("10.0.0.9", 80), os_error(errno.EHOSTUNREACH)),
            "http://10.0.0.9/hook",
            "10.0.0.9:80 is unreachable (No route to host)",
            id="unreachable",
        ),
        pytest.param(
            aiohttp.ServerDisconnectedError(),
            LOCAL,
            "127.0.0.1:46917 closed the connection without answering",
            id="disconnected",
        ),
        pytest.param(
            aiohttp.ClientPayloadError("Response payload is not completed"),
            LOCAL,
            "the answer from 127.0.0.1:46917 was cut short",
            id="cut-short",
        ),
        pytest.param(
            response_error("Bad status line 'garbage'"),
            URL_,
            "invalid HTTP answer from hooks.example.com:443: Bad status line 'garbage'",
            id="bad-http",
        ),
        pytest.param(
            RuntimeError(f"unexpected at {URL_}"),
            URL_,
            "request to hooks.example.com:443 failed: RuntimeError: unexpected at "
            "https://***@hooks.example.com/alfred?token=***",
            id="anything-else-scrubbed",
        ),
    ],
)
def test_a_failed_attempt_is_one_human_sentence(
    exc: BaseException, url: str, expected: str
) -> None:
    sentence = describe(exc, url, 15.0)
    assert sentence == expected
    assert "tok-5ecret-9f2c" not in sentence and "pw-5ecret" not in sentence
    assert "Error(" not in sentence  # no library repr


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (500, "HTTP 500 Internal Server Error"),
        (404, "HTTP 404 Not Found"),
        (429, "HTTP 429 Too Many Requests"),
        (410, "HTTP 410 Gone"),
        (599, "HTTP 599"),
    ],
)
def test_an_http_failure_names_its_status(status: int, expected: str) -> None:
    assert http_error(status) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", ""),
        (b'{"ok":true}', '{"ok":true}'),
        (b"x" * 5000, "x" * 1024),
        ("é".encode() * 600, "é" * 512),  # 1200 bytes: cut at the 1 KB boundary, on a character
        (("a" + "é" * 600).encode(), "a" + "é" * 511 + "\ufffd"),  # cut inside a character
        (b"\xff\x00ok", "\ufffd\ufffdok"),  # undecodable, and a NUL (PostgreSQL refuses it)
        (b"\x1b[2J", "\x1b[2J"),  # kept; escaped where it is printed
    ],
)
def test_the_start_of_an_answer_is_kept_as_text(body: bytes, expected: str) -> None:
    assert response_text(body) == expected
