"""Tests for trigger_engine.polling.source: the Meet Alfred client over httpx.MockTransport.

Every failure is one row of a table: what the API (or the network) did, what kind of
failure that is, and what the message says; no message may ever carry the API key.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from freezegun import freeze_time

from trigger_engine import __version__
from trigger_engine.config import Account, SourceSettings, TriggerSettings, config_from_dict
from trigger_engine.errors import SourceError
from trigger_engine.polling.source import REDACTED, Source, classify_status, parse_items, redact
from trigger_engine.states import FailureKind

KEY = "k-SECRET-123"
BASE = "http://alfred.test/api"
LEADS = [
    {"id": "l-3", "firstName": "Ada", "person": {"key": "p-3"}},
    {"id": "l-2", "firstName": "Grace", "person": {"key": "p-2"}},
]

Handler = Callable[[httpx.Request], httpx.Response]


def settings(
    *, trigger: dict[str, Any] | None = None, source: dict[str, Any] | None = None
) -> tuple[SourceSettings, Account, TriggerSettings]:
    cfg = config_from_dict(
        {
            "accounts": [{"name": "acme", "api_key": KEY}],
            "triggers": {"leads": trigger or {}},
            "source": {"base_url": BASE, **(source or {})},
        }
    )
    return cfg.source, cfg.accounts[0], cfg.triggers["leads"]


def fetch(
    handler: Handler,
    *,
    trigger: dict[str, Any] | None = None,
    source: dict[str, Any] | None = None,
) -> list[Any]:
    source_settings, account, trigger_settings = settings(trigger=trigger, source=source)
    with Source(source_settings, transport=httpx.MockTransport(handler)) as client:
        return client.fetch(account, trigger_settings)


def fetch_error(handler: Handler, **kwargs: Any) -> SourceError:
    with pytest.raises(SourceError) as info:
        fetch(handler, **kwargs)
    return info.value


def json_response(data: Any, status: int = 200) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=data)

    return handler


# ----------------------------------------------------------------- the request


def test_request_carries_the_key_as_a_query_parameter() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=LEADS)

    assert fetch(handler) == LEADS
    (request,) = seen
    assert request.method == "GET"
    assert request.url.scheme == "http"
    assert request.url.host == "alfred.test"
    assert request.url.path == "/api/leads"
    assert dict(request.url.params) == {"api_key": KEY}
    assert request.headers["user-agent"] == f"trigger-engine/{__version__}"
    assert "application/json" in request.headers["accept"]


@pytest.mark.parametrize(
    ("trigger", "source", "query"),
    [
        pytest.param({}, {"auth_param": "token"}, {"token": KEY}, id="custom-auth-param"),
        pytest.param(
            {"params": {"status": "new", "limit": 50}},
            {},
            {"status": "new", "limit": "50", "api_key": KEY},
            id="extra-params",
        ),
        pytest.param(
            {"params": {"flag": True}},
            {"auth_param": "key"},
            {"flag": "true", "key": KEY},
            id="bool-param-and-custom-auth",
        ),
    ],
)
def test_request_query(
    trigger: dict[str, Any], source: dict[str, Any], query: dict[str, str]
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=[])

    assert fetch(handler, trigger=trigger, source=source) == []
    assert dict(seen[0].url.params) == query


@pytest.mark.parametrize(
    ("trigger", "path"),
    [
        pytest.param({}, "/api/leads", id="builtin-path"),
        pytest.param({"path": "/v2/people"}, "/api/v2/people", id="overridden-path"),
    ],
)
def test_request_path(trigger: dict[str, Any], path: str) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200, json=[])

    fetch(handler, trigger=trigger)
    assert seen == [path]


# ----------------------------------------------------------------- successful bodies


@pytest.mark.parametrize(
    ("body", "items_path", "expected"),
    [
        pytest.param(LEADS, None, LEADS, id="list-as-is"),
        pytest.param([], None, [], id="empty-list"),
        pytest.param([1, "x", None], None, [1, "x", None], id="non-objects-kept"),
        pytest.param({"actions": LEADS}, "actions", LEADS, id="items-path"),
        pytest.param({"data": {"actions": LEADS}, "meta": 1}, "data.actions", LEADS, id="dotted"),
        pytest.param({"data": {"actions": []}}, "data.actions", [], id="dotted-empty"),
    ],
)
def test_items(body: Any, items_path: str | None, expected: list[Any]) -> None:
    trigger = {"items_path": items_path} if items_path else {}
    assert fetch(json_response(body), trigger=trigger) == expected


def test_items_keep_the_api_order_and_values() -> None:
    raw = b'[{"id": 3, "n": 1.5, "u": "\\u00e9"}, {"id": 2}]'

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=raw, headers={"content-type": "application/json"})

    assert fetch(handler) == orjson.loads(raw)


def test_a_lone_surrogate_in_a_name_is_kept_not_refused() -> None:
    """An API that cut a name in the middle of an emoji: the lead still arrives."""
    raw = b'[{"id": "l-1", "person": {"name": "Shaban \\ud83d"}}, {"id": "l-2"}]'
    items = fetch(respond(200, raw, JSON))
    assert items == [{"id": "l-1", "person": {"name": "Shaban \ud83d"}}, {"id": "l-2"}]


def test_ids_beyond_64_bits_stay_two_exact_integers() -> None:
    raw = b'[{"id": 18446744073709551617}, {"id": 18446744073709551618}]'
    ids = [item["id"] for item in fetch(respond(200, raw, JSON))]
    assert ids == [18446744073709551617, 18446744073709551618]
    assert all(type(i) is int for i in ids)


# ----------------------------------------------------------------- the failure table


def respond(status: int, content: bytes = b"", headers: dict[str, str] | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=content, headers=headers)

    return handler


def echo_key(status: int) -> Handler:
    """An error page that repeats the request URL (and so the key)."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, text=f"error for {request.url}")

    return handler


def raise_(exc_type: type[httpx.TransportError]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type(f"cannot reach {request.url}", request=request)

    return handler


HTML = {"content-type": "text/html; charset=utf-8"}
JSON = {"content-type": "application/json"}

FAILURES = [
    # status → TRANSIENT
    pytest.param(respond(500), {}, FailureKind.TRANSIENT, ["HTTP 500"], id="500"),
    pytest.param(echo_key(502), {}, FailureKind.TRANSIENT, ["HTTP 502"], id="502"),
    pytest.param(respond(503), {}, FailureKind.TRANSIENT, ["HTTP 503"], id="503"),
    pytest.param(respond(504), {}, FailureKind.TRANSIENT, ["HTTP 504"], id="504"),
    pytest.param(respond(429), {}, FailureKind.TRANSIENT, ["HTTP 429"], id="429"),
    pytest.param(respond(408), {}, FailureKind.TRANSIENT, ["HTTP 408"], id="408"),
    # refused key → AUTH
    pytest.param(echo_key(401), {}, FailureKind.AUTH, ["'acme'", "refused", "HTTP 401"], id="401"),
    pytest.param(respond(403), {}, FailureKind.AUTH, ["'acme'", "refused", "HTTP 403"], id="403"),
    # our request is wrong → CLIENT
    pytest.param(echo_key(400), {}, FailureKind.CLIENT, ["HTTP 400"], id="400"),
    pytest.param(respond(404), {}, FailureKind.CLIENT, ["HTTP 404"], id="404"),
    pytest.param(respond(422), {}, FailureKind.CLIENT, ["HTTP 422"], id="422"),
    pytest.param(
        respond(301, headers={"location": f"https://new.test/leads?api_key={KEY}"}),
        {},
        FailureKind.CLIENT,
        ["HTTP 301", "redirect", "source.base_url"],
        id="301",
    ),
    pytest.param(
        respond(302, headers={"location": "/login"}),
        {},
        FailureKind.CLIENT,
        ["HTTP 302", "redirect"],
        id="302",
    ),
    # 2xx that is not a list → BAD_BODY
    pytest.param(
        respond(200, b"<html><body>Login</body></html>", HTML),
        {},
        FailureKind.BAD_BODY,
        ["not valid JSON", "text/html"],
        id="200-html",
    ),
    pytest.param(
        respond(200, b'[{"id": "l-1"}, {"id": "l-', JSON),
        {},
        FailureKind.BAD_BODY,
        ["not valid JSON", "application/json"],
        id="200-truncated-json",
    ),
    pytest.param(respond(200), {}, FailureKind.BAD_BODY, ["empty"], id="200-empty-body"),
    pytest.param(
        respond(200, b"  \n", JSON), {}, FailureKind.BAD_BODY, ["empty"], id="200-blank-body"
    ),
    pytest.param(
        json_response({"actions": LEADS}),
        {},
        FailureKind.BAD_BODY,
        ["expected a JSON list", "an object", "items_path"],
        id="200-object-not-list",
    ),
    pytest.param(
        json_response("ok"), {}, FailureKind.BAD_BODY, ["a str"], id="200-string-not-list"
    ),
    pytest.param(respond(200, b"null", JSON), {}, FailureKind.BAD_BODY, ["null"], id="200-null"),
    pytest.param(
        json_response({"data": {}}),
        {"items_path": "data.actions"},
        FailureKind.BAD_BODY,
        ["'data.actions'", "missing"],
        id="200-items-path-missing",
    ),
    pytest.param(
        json_response({"data": {"actions": {"id": 1}}}),
        {"items_path": "data.actions"},
        FailureKind.BAD_BODY,
        ["'data.actions'", "not a list"],
        id="200-items-path-not-list",
    ),
    pytest.param(
        json_response(LEADS),
        {"items_path": "actions"},
        FailureKind.BAD_BODY,
        ["'actions'", "a list"],
        id="200-list-when-object-expected",
    ),
    pytest.param(
        respond(200, b"\x1f\x8bnot really gzip", {"content-encoding": "gzip", **JSON}),
        {},
        FailureKind.BAD_BODY,
        [],
        id="200-corrupt-gzip",
    ),
    # the network → TRANSIENT
    pytest.param(
        raise_(httpx.ConnectError),
        {},
        FailureKind.TRANSIENT,
        ["connection failed"],
        id="connect-error",
    ),
    pytest.param(
        raise_(httpx.RemoteProtocolError),
        {},
        FailureKind.TRANSIENT,
        ["connection failed"],
        id="protocol-error",
    ),
    pytest.param(
        raise_(httpx.ReadTimeout), {}, FailureKind.TRANSIENT, ["timed out after 30s"], id="timeout"
    ),
    pytest.param(
        raise_(httpx.ConnectTimeout),
        {},
        FailureKind.TRANSIENT,
        ["timed out after 30s"],
        id="connect-timeout",
    ),
]


@pytest.mark.parametrize(("handler", "trigger", "kind", "fragments"), FAILURES)
def test_failure_table(
    handler: Handler, trigger: dict[str, Any], kind: FailureKind, fragments: list[str]
) -> None:
    error = fetch_error(handler, trigger=trigger)
    message = str(error)
    assert error.kind is kind
    for fragment in fragments:
        assert fragment in message
    # Every message says where: the account, the trigger and the redacted URL.
    assert "account 'acme'" in message
    assert "trigger 'leads'" in message
    assert f"GET {BASE}/leads?api_key=***" in message
    assert "api_key=***" in message
    # ... and never the key, nor a chained exception that could print it.
    assert KEY not in message
    assert KEY not in repr(error)
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


@pytest.mark.parametrize(
    "handler",
    [respond(401), respond(500), raise_(httpx.ConnectError), respond(200, b"<html>", HTML)],
)
def test_custom_auth_param_is_redacted_too(handler: Handler) -> None:
    error = fetch_error(handler, source={"auth_param": "token"})
    assert "token=***" in str(error)
    assert KEY not in str(error)


def test_failure_messages_redact_the_key_alongside_params() -> None:
    error = fetch_error(respond(500), trigger={"params": {"status": "new"}})
    assert "api_key=***" in str(error)
    assert "status=new" in str(error)
    assert KEY not in str(error)


PASSWORD = "pw-5ecret-77"


@pytest.mark.parametrize(
    "handler",
    [respond(401), respond(500), raise_(httpx.ConnectError), respond(200, b"<html>", HTML)],
)
def test_a_password_in_base_url_never_reaches_a_message(handler: Handler) -> None:
    """Neither through the URL we show, nor through httpx's own text (which quotes it)."""
    error = fetch_error(handler, source={"base_url": f"http://te-user:{PASSWORD}@alfred.test/api"})
    assert "GET http://***@alfred.test/api/leads?api_key=***" in str(error)
    assert PASSWORD not in str(error)
    assert "te-user" not in str(error)
    assert KEY not in str(error)


@pytest.mark.parametrize(
    ("status", "retry_after", "expected"),
    [
        pytest.param(429, "30", 30.0, id="429-seconds"),
        pytest.param(503, "120", 120.0, id="503-seconds"),
        pytest.param(429, "Fri, 27 Nov 2026 10:05:00 GMT", 300.0, id="429-http-date"),
        pytest.param(429, "Fri, 27 Nov 2026 09:00:00 GMT", 0.0, id="429-past-date"),
        pytest.param(429, "soon", None, id="429-garbage"),
        pytest.param(429, None, None, id="429-absent"),
        pytest.param(500, "30", None, id="500-ignores-retry-after"),
    ],
)
@freeze_time("2026-11-27T10:00:00Z")
def test_retry_after(status: int, retry_after: str | None, expected: float | None) -> None:
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    error = fetch_error(respond(status, headers=headers))
    assert error.kind is FailureKind.TRANSIENT
    if expected is None:
        assert error.retry_after is None
    else:
        assert error.retry_after == pytest.approx(expected)


def test_unreadable_retry_after_bytes_are_ignored() -> None:
    """A header byte that decodes (latin-1) to a non-ASCII digit must not crash the poll."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers=[(b"retry-after", b"\xb2")])

    error = fetch_error(handler)
    assert error.kind is FailureKind.TRANSIENT
    assert error.retry_after is None


def test_oversized_body_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("trigger_engine.polling.source.MAX_BODY", 16)
    error = fetch_error(respond(200, b"[" + b'"x",' * 10 + b'"x"]', JSON))
    assert error.kind is FailureKind.BAD_BODY
    assert "larger than" in str(error)
    assert KEY not in str(error)


def test_a_decompression_bomb_is_refused_naming_the_ratio() -> None:
    """gzip of ``[{},{},...]``: 12 KiB that decode to 12 MiB, 4 million objects."""
    unit = b"{}," * 1024
    raw = gzip.compress(b"[" + unit * 4096 + b"{}]", 9)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, content=iter([raw]), headers={"content-encoding": "gzip", **JSON}
        )

    error = fetch_error(handler)
    assert error.kind is FailureKind.BAD_BODY
    assert str(error).startswith(
        f"account 'acme', trigger 'leads': GET {BASE}/leads?api_key=***: "
        f"the response decompresses to more than 100 times its {len(raw):,} bytes ("
    )


def test_total_time_is_bounded_by_the_timeout() -> None:
    """A body that trickles in past the timeout fails as a timeout, not a hang."""
    with freeze_time("2026-11-27T10:00:00Z") as frozen:

        def chunks() -> Iterator[bytes]:
            yield b"[1,"
            frozen.tick(31)
            yield b"2]"

        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, content=chunks())

        error = fetch_error(handler)
    assert error.kind is FailureKind.TRANSIENT
    assert "timed out after 30s" in str(error)


# ----------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, None),
        (201, None),
        (204, None),
        (299, None),
        (300, FailureKind.CLIENT),
        (301, FailureKind.CLIENT),
        (302, FailureKind.CLIENT),
        (304, FailureKind.CLIENT),
        (308, FailureKind.CLIENT),
        (400, FailureKind.CLIENT),
        (401, FailureKind.AUTH),
        (403, FailureKind.AUTH),
        (404, FailureKind.CLIENT),
        (405, FailureKind.CLIENT),
        (408, FailureKind.TRANSIENT),
        (410, FailureKind.CLIENT),
        (422, FailureKind.CLIENT),
        (425, FailureKind.TRANSIENT),
        (429, FailureKind.TRANSIENT),
        (499, FailureKind.CLIENT),
        (500, FailureKind.TRANSIENT),
        (502, FailureKind.TRANSIENT),
        (503, FailureKind.TRANSIENT),
        (504, FailureKind.TRANSIENT),
        (520, FailureKind.TRANSIENT),
        (599, FailureKind.TRANSIENT),
    ],
)
def test_classify_status(status: int, kind: FailureKind | None) -> None:
    assert classify_status(status) is kind


@pytest.mark.parametrize(
    ("trigger", "source", "expected"),
    [
        pytest.param({}, {}, f"{BASE}/leads?api_key=***", id="default"),
        pytest.param({}, {"auth_param": "token"}, f"{BASE}/leads?token=***", id="custom-param"),
        pytest.param(
            {"params": {"status": "new", "q": "a b&c"}},
            {},
            f"{BASE}/leads?api_key=***&status=new&q=a+b%26c",
            id="with-params-encoded",
        ),
        pytest.param(
            {"path": "/v2/x"}, {"base_url": BASE + "/"}, f"{BASE}/v2/x?api_key=***", id="slash"
        ),
        pytest.param(
            {},
            {"base_url": "https://user:pw@alfred.test/api"},
            "https://***@alfred.test/api/leads?api_key=***",
            id="userinfo",
        ),
    ],
)
def test_display_url(trigger: dict[str, Any], source: dict[str, Any], expected: str) -> None:
    source_settings, _account, trigger_settings = settings(trigger=trigger, source=source)
    with Source(source_settings, transport=httpx.MockTransport(json_response([]))) as client:
        shown = client.display_url(trigger_settings)
    assert shown == expected
    assert KEY not in shown


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        pytest.param(
            f"GET /leads?api_key={KEY}", [KEY], f"GET /leads?api_key={REDACTED}", id="one"
        ),
        pytest.param(f"{KEY} and {KEY}", [KEY], "*** and ***", id="every-occurrence"),
        pytest.param("a-b c-d", ["a-b", "c-d"], "*** ***", id="several-secrets"),
        pytest.param("nothing here", [KEY], "nothing here", id="absent"),
        pytest.param("text", [], "text", id="no-secrets"),
        pytest.param("text", [""], "text", id="empty-secret-ignored"),
        pytest.param("", [KEY], "", id="empty-text"),
    ],
)
def test_redact(text: str, secrets: list[str], expected: str) -> None:
    assert redact(text, secrets) == expected


def test_parse_items_message_names_where() -> None:
    with pytest.raises(SourceError) as info:
        parse_items(b"{", "application/json; charset=utf-8", None, "account 'x'")
    assert info.value.kind is FailureKind.BAD_BODY
    assert str(info.value) == "account 'x': the response is not valid JSON (application/json)"


def test_a_body_over_the_parse_budget_is_refused_unparsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("trigger_engine.polling.body.PARSE_BUDGET", 1_000)
    error = fetch_error(respond(200, b"[" + b"{}," * 600 + b"{}]", JSON))
    assert error.kind is FailureKind.BAD_BODY
    assert str(error) == (
        f"account 'acme', trigger 'leads': GET {BASE}/leads?api_key=***: the response holds "
        "more than 1,000 JSON brackets and separators ({ [ , :), more than a poll may parse; "
        "refusing it"
    )
    assert fetch(respond(200, b"[" + b"{}," * 400 + b"{}]", JSON)) == [{}] * 401
