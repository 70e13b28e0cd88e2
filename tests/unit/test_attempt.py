"""Tests for trigger_engine.delivery.attempt: a failed attempt's error never carries the
credentials of the sink URL, whatever aiohttp wrote, and is still a recorded failure."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from trigger_engine.config import Sink
from trigger_engine.delivery.attempt import attempt
from trigger_engine.states import DeliveryStatus
from trigger_engine.types import DueDelivery

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
TOKEN = "tok-5ecret-9f2c"
URL_WITH_TOKEN = f"http://user:pw-5ecret-77@127.0.0.1:9/hook?token={TOKEN}&team=ops"


def _response_error(url: str) -> Exception:
    info = aiohttp.RequestInfo(URL(url), "POST", CIMultiDictProxy(CIMultiDict()), URL(url))
    return aiohttp.ClientResponseError(info, (), status=400, message="Bad status line")


class _Raising:
    """An aiohttp session whose POST fails with ``exc`` (a fake: only what attempt uses)."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def post(self, url: str, **_kwargs: Any) -> _Raising:
        return self

    async def __aenter__(self) -> None:
        raise self.exc

    async def __aexit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        return None


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        pytest.param(
            _response_error(URL_WITH_TOKEN),
            "invalid HTTP answer from 127.0.0.1:9: Bad status line",
            id="aiohttp-quotes-the-url",
        ),
        pytest.param(
            aiohttp.InvalidURL(URL_WITH_TOKEN),
            "the sink URL is not a valid URL",
            id="invalid-url",
        ),
        pytest.param(
            RuntimeError(f"unexpected at {URL_WITH_TOKEN}"),
            "request to 127.0.0.1:9 failed: RuntimeError: unexpected at "
            "http://***@127.0.0.1:9/hook?token=***&team=***",
            id="anything-else",
        ),
    ],
)
def test_a_failed_attempt_never_records_the_url_credentials(exc: Exception, expected: str) -> None:
    sink = Sink(name="crm", url=URL_WITH_TOKEN)  # type: ignore[call-arg]
    delivery = DueDelivery(1, "crm", 0, "evt_1", "lead.new", "acme", NOW, b"{}")
    outcome = asyncio.run(
        attempt(
            _Raising(exc),  # type: ignore[arg-type]
            sink,
            delivery,
            clock=lambda: NOW,
            rand=lambda: 0.5,
        )
    )
    assert outcome.error == expected
    assert outcome.new_status is DeliveryStatus.FAILED
    assert outcome.status_code is None
    assert TOKEN not in outcome.error
    assert "pw-5ecret-77" not in outcome.error


def test_the_engine_test_event_is_an_envelope_without_account_signed_like_any_delivery() -> None:
    from standardwebhooks.webhooks import Webhook

    from trigger_engine.core.events import ENGINE_TEST, engine_test_event
    from trigger_engine.delivery.attempt import body_for, headers_for

    secret = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
    sink = Sink(name="crm", url="http://127.0.0.1:9/hook", secret=secret)  # type: ignore[call-arg]
    event = engine_test_event("crm", NOW)
    assert event.event_id.startswith("evt_") and event.event_type == ENGINE_TEST == "engine.test"
    assert engine_test_event("crm", NOW).event_id != event.event_id  # a new id each time
    body = body_for(sink, event)
    stamp = int(datetime.now(UTC).timestamp())
    payload = Webhook(secret).verify(body, headers_for(sink, event, body, stamp))
    assert payload == {
        "type": "engine.test",
        "timestamp": "2026-11-27T10:00:00Z",
        "account": None,
        "data": {
            "message": "a test event from trigger-engine check to sink 'crm': it arrived, so "
            "the sink works",
            "sink": "crm",
            "sent_by": "trigger-engine check",
        },
    }
