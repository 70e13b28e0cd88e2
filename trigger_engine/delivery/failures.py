"""A failed delivery attempt as one sentence a person reads: "connection refused by
127.0.0.1:46917", "timed out after 15s", "HTTP 500 Internal Server Error", "TLS handshake
failed with hooks.example.com: ...", "DNS lookup failed for hooks.example.com".

Pure: an exception (or a status code) and the sink's URL in, a sentence out; nothing is
sent or read. The sentence names the receiver by host and port only, never by its URL (a
sink URL may carry a token); what aiohttp adds is scrubbed of the URL's credentials all the
same (:func:`~trigger_engine.core.redact.scrub_url`), because a library's message may quote it.
"""

from __future__ import annotations

import errno
import re
import ssl
from http import HTTPStatus

import aiohttp
from yarl import URL

from trigger_engine.core.redact import scrub_url

_DEFAULT_PORTS = {"http": 80, "https": 443}
_SSL_SOURCE = re.compile(r"\s*\(_ssl\.c:\d+\)")


def http_error(status: int) -> str:
    """``HTTP 500 Internal Server Error``; ``HTTP 599`` for a code without a standard name."""
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def timed_out(seconds: float) -> str:
    """``timed out after 15s``: the sink's ``timeout`` was reached."""
    return f"timed out after {seconds:g}s"


def _where(url: str) -> tuple[str, str]:
    """(host, host:port) of ``url``; no userinfo, path or query."""
    try:
        parsed = URL(url)
    except (TypeError, ValueError):
        return "the receiver", "the receiver"
    host = parsed.host or "the receiver"
    port = parsed.port or _DEFAULT_PORTS.get(parsed.scheme)
    return host, f"{host}:{port}" if port else host


def _reason(exc: BaseException | None) -> str:
    """The short reason an OS or TLS error gives: a certificate's verify message, a TLS
    error's reason code in words, else ``strerror`` or the text (without ``(_ssl.c:1006)``)."""
    if exc is None:
        return "unknown reason"
    verify = getattr(exc, "verify_message", None)
    if verify:
        return str(verify)
    code = getattr(exc, "reason", None) if isinstance(exc, ssl.SSLError) else None
    if isinstance(code, str) and code:
        return code.replace("_", " ").lower()
    text = str(getattr(exc, "strerror", None) or exc or type(exc).__name__)
    return _SSL_SOURCE.sub("", text).strip()


def describe(exc: BaseException, url: str, timeout: float) -> str:
    """The sentence for an attempt to ``url`` that ended with ``exc`` (``timeout``: the
    sink's, for a time-out)."""
    host, address = _where(url)
    if isinstance(exc, TimeoutError):  # aiohttp's ServerTimeoutError is one too
        sentence = timed_out(timeout)
    elif isinstance(exc, aiohttp.ClientConnectorDNSError):
        sentence = f"DNS lookup failed for {host}"
    elif isinstance(exc, aiohttp.ClientConnectorCertificateError):
        sentence = f"TLS certificate of {host} not accepted: {_reason(exc.certificate_error)}"
    elif isinstance(exc, aiohttp.ClientConnectorSSLError | aiohttp.ClientSSLError):
        sentence = f"TLS handshake failed with {host}: {_reason(exc.os_error)}"
    elif isinstance(exc, aiohttp.ClientConnectorError):
        sentence = _connect_failed(exc.os_error, address)
    elif isinstance(exc, aiohttp.ServerDisconnectedError):
        sentence = f"{address} closed the connection without answering"
    elif isinstance(exc, aiohttp.ClientPayloadError):
        sentence = f"the answer from {address} was cut short"
    elif isinstance(exc, aiohttp.ClientResponseError):
        message = exc.message.strip() or "unreadable"
        sentence = f"invalid HTTP answer from {address}: {message}"
    elif isinstance(exc, aiohttp.InvalidURL):
        sentence = "the sink URL is not a valid URL"
    elif isinstance(exc, aiohttp.ClientOSError):
        sentence = _connect_failed(exc, address)
    elif isinstance(exc, aiohttp.ClientError):
        sentence = f"request to {address} failed: {type(exc).__name__}: {exc}".rstrip(": ")
    else:  # anything else still ends as a recorded, retried attempt
        sentence = f"request to {address} failed: {type(exc).__name__}: {exc}".rstrip(": ")
    return scrub_url(sentence, url)


def _connect_failed(os_error: OSError, address: str) -> str:
    if isinstance(os_error, ConnectionRefusedError) or os_error.errno == errno.ECONNREFUSED:
        return f"connection refused by {address}"
    if isinstance(os_error, ConnectionResetError) or os_error.errno == errno.ECONNRESET:
        return f"connection reset by {address}"
    if os_error.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return f"{address} is unreachable ({_reason(os_error)})"
    return f"could not connect to {address}: {_reason(os_error)}"
