"""A request ends by its timeout, whatever the other side does: real local servers that
drip header bytes, send ``100 Continue`` forever or drip the body, against the source
(httpx, ``source.timeout``) and a sink (aiohttp, ``sinks[].timeout``).

Each call runs in a thread of its own and the test waits for it on an event, for at most
the timeout plus :data:`MARGIN`: a call still running then fails the test (and the server's
close releases it), it never hangs the suite.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.stalling import StallingServer
from trigger_engine.config import config_from_dict
from trigger_engine.delivery.attempt import attempt
from trigger_engine.errors import SourceError
from trigger_engine.polling.source import Source
from trigger_engine.states import DeliveryStatus, FailureKind
from trigger_engine.types import AttemptOutcome, DueDelivery

TIMEOUT = 2.0  # seconds: source.timeout and the sink's timeout
MARGIN = 1.0  # what a loaded 2-core machine may add to the deadline

# every: how often the server sends its next byte (or interim response); always less than
# TIMEOUT, so no single read ever waits long enough to trip a per-operation timeout.
STALLS = [
    pytest.param("drip-headers", 1.0, id="drip-headers"),
    pytest.param("continue", 0.2, id="100-continue-forever"),
    pytest.param("drip-body", 1.9, id="drip-body"),
]


def within(limit: float, call: Callable[[], Any]) -> tuple[Any, float]:
    """``call()`` in its own thread: what it returned or raised, and how long it took."""
    result: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        started = time.monotonic()
        try:
            result["value"] = call()
        except BaseException as exc:
            result["value"] = exc
        finally:
            result["elapsed"] = time.monotonic() - started
            done.set()

    threading.Thread(target=run, name="bounded-call", daemon=True).start()
    assert done.wait(limit), f"still running {limit:g}s after it started"
    return result["value"], result["elapsed"]


@pytest.mark.parametrize(("mode", "every"), STALLS)
def test_a_poll_of_a_stalling_upstream_ends_at_source_timeout(mode: str, every: float) -> None:
    with StallingServer(mode, every=every) as upstream:
        cfg = config_from_dict(
            {
                "accounts": [{"name": "acme", "api_key": "k-SECRET-123"}],
                "triggers": {"leads": {}},
                "source": {"base_url": upstream.url, "timeout": TIMEOUT},
            }
        )
        with Source(cfg.source) as source:
            error, elapsed = within(
                TIMEOUT + MARGIN, lambda: source.fetch(cfg.accounts[0], cfg.triggers["leads"])
            )
        assert upstream.requests.is_set()
    assert isinstance(error, SourceError), error
    assert error.kind is FailureKind.TRANSIENT
    assert str(error) == (
        f"account 'acme', trigger 'leads': GET {upstream.url}/leads?api_key=***: timed out after 2s"
    )
    assert TIMEOUT - 0.05 <= elapsed <= TIMEOUT + MARGIN, elapsed


def test_the_deadline_spans_pages_not_the_whole_fetch() -> None:
    """Each request of a paginated fetch has its own deadline (the timeout is per request)."""
    with StallingServer("drip-headers", every=1.0) as upstream:
        cfg = config_from_dict(
            {
                "accounts": [{"name": "acme", "api_key": "k"}],
                "triggers": {"leads": {"pagination": {"per_page": 10}}},
                "source": {"base_url": upstream.url, "timeout": TIMEOUT},
            }
        )
        with Source(cfg.source) as source:
            error, elapsed = within(
                TIMEOUT + MARGIN, lambda: source.fetch(cfg.accounts[0], cfg.triggers["leads"])
            )
    assert isinstance(error, SourceError), error
    assert "page=1" in str(error)
    assert "timed out after 2s" in str(error)
    assert elapsed <= TIMEOUT + MARGIN


# ----------------------------------------------------------------- HTTPS

# A self-signed certificate for 127.0.0.1 (openssl req -x509, EC P-256, valid until 2126).
CERT = """-----BEGIN CERTIFICATE-----
MIIBkDCCATagAwIBAgIUKU8Z6Hq5KacqJsp0d2eYYXky41gwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJMTI3LjAuMC4xMCAXDTI2MTIwMTAyMzk1NVoYDzIxMjYxMTA3
MDIzOTU1WjAUMRIwEAYDVQQDDAkxMjcuMC4wLjEwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAARiQQz3w2zKx2rVIipcKMP/OeP+FiE+H8AZNAM4pUjMJpmGxQJeAxt9
r2c4wLelZTyNMMkRe4AbhntdMT8bFvTAo2QwYjAdBgNVHQ4EFgQUlEDwOkkSMynD
Bjar18CemtAC/iMwHwYDVR0jBBgwFoAUlEDwOkkSMynDBjar18CemtAC/iMwDwYD
VR0RBAgwBocEfwAAATAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUC
IQDllPudgGadSkkcoybVjIwFSZdRQdGaQYi4K5ktTncY4wIgNJmyRUYewgjgJ+Vp
1rWA4tgQExUUIWMmNg/yPqEcouM=
-----END CERTIFICATE-----
"""
KEY = """-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgQmmPFoNB+Cc0a43B
wJm7y2gJF0axAqXYTcYvpPz5ReKhRANCAARiQQz3w2zKx2rVIipcKMP/OeP+FiE+
H8AZNAM4pUjMJpmGxQJeAxt9r2c4wLelZTyNMMkRe4AbhntdMT8bFvTA
-----END PRIVATE KEY-----
"""


@pytest.fixture
def tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """The server's TLS context; the source trusts its certificate (SSL_CERT_FILE)."""
    (tmp_path / "cert.pem").write_text(CERT)
    (tmp_path / "key.pem").write_text(KEY)
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "cert.pem"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return context


@pytest.mark.parametrize(("mode", "every"), [("json", 1.0), ("drip-headers", 1.0)])
def test_https_keeps_the_deadline_too(tls: ssl.SSLContext, mode: str, every: float) -> None:
    """The TLS stream that replaces the TCP one after the handshake keeps the deadline."""
    with StallingServer(mode, every=every, tls=tls) as upstream:
        cfg = config_from_dict(
            {
                "accounts": [{"name": "acme", "api_key": "k"}],
                "triggers": {"leads": {}},
                "source": {"base_url": upstream.url, "timeout": TIMEOUT},
            }
        )
        with Source(cfg.source) as source:
            outcome, elapsed = within(
                TIMEOUT + MARGIN, lambda: source.fetch(cfg.accounts[0], cfg.triggers["leads"])
            )
    if mode == "json":
        assert outcome == []
    else:
        assert isinstance(outcome, SourceError), outcome
        assert str(outcome).endswith(f"GET {upstream.url}/leads?api_key=***: timed out after 2s")
        assert TIMEOUT - 0.05 <= elapsed <= TIMEOUT + MARGIN, elapsed


# ----------------------------------------------------------------- sinks (aiohttp)
# aiohttp's ClientTimeout(total=...) (delivery/attempt.py) is a real total: these pass as
# they are; they guard it against a change to sock_read or to a per-operation timeout.


def send_once(url: str) -> AttemptOutcome:
    cfg = config_from_dict(
        {
            "accounts": [{"name": "acme", "api_key": "k"}],
            "triggers": {"leads": {}},
            "sinks": [{"name": "crm", "url": url, "timeout": TIMEOUT}],
        }
    )
    delivery = DueDelivery(
        id=1,
        sink="crm",
        attempts=0,
        event_id="evt_01",
        event_type="lead.new",
        account="acme",
        created_at=datetime(2026, 11, 27, 10, tzinfo=UTC),
        payload=b'{"id": "L1"}',
    )

    async def post() -> AttemptOutcome:
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            return await attempt(
                session,
                cfg.sinks[0],
                delivery,
                clock=lambda: datetime.now(UTC),
                rand=lambda: 0.5,
            )

    return asyncio.run(post())


# A receiver that answered its status line has answered: the attempt reads what of the
# receiver's body is there and never waits for the rest, so a dripping body is not a stall.
@pytest.mark.parametrize(("mode", "every"), STALLS[:2])
def test_an_attempt_to_a_stalling_receiver_ends_at_the_sink_timeout(
    mode: str, every: float
) -> None:
    with StallingServer(mode, every=every) as receiver:
        outcome, elapsed = within(TIMEOUT + MARGIN, lambda: send_once(receiver.url))
        assert receiver.requests.is_set()
    assert isinstance(outcome, AttemptOutcome), outcome
    assert outcome.error == "timed out after 2s"
    assert outcome.status_code is None
    assert outcome.new_status is DeliveryStatus.FAILED  # recorded, and retried later
    assert outcome.next_attempt_at is not None
    assert TIMEOUT - 0.05 <= elapsed <= TIMEOUT + MARGIN, elapsed
