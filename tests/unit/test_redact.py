"""Tests for trigger_engine.core.redact: credentials in URLs, as tables."""

from __future__ import annotations

import pytest

from trigger_engine.core.redact import MIN_SECRET, redact_url, scrub_url, url_secrets

SINK = "https://user:pa55word@hooks.test:8443/hook?token=tok-5ecret&team=ops"


@pytest.mark.parametrize(
    ("url", "shown", "dropped"),
    [
        pytest.param(
            "https://hooks.test/hook",
            "https://hooks.test/hook",
            "https://hooks.test/hook",
            id="plain",
        ),
        pytest.param(
            "https://Hooks.Test:8443/a/b/",
            "https://Hooks.Test:8443/a/b/",
            "https://Hooks.Test:8443/a/b/",
            id="unchanged-exactly",
        ),
        pytest.param(
            "https://user:pw@api.test/zapier",
            "https://***@api.test/zapier",
            "https://api.test/zapier",
            id="userinfo",
        ),
        pytest.param(
            "https://token@api.test/x",
            "https://***@api.test/x",
            "https://api.test/x",
            id="user-only",
        ),
        pytest.param(
            "https://a:b@c@api.test/x",
            "https://***@api.test/x",
            "https://api.test/x",
            id="at-in-password",
        ),
        pytest.param(
            "https://h.test/hook?token=s3cret",
            "https://h.test/hook?token=***",
            "https://h.test/hook",
            id="query",
        ),
        pytest.param(
            "https://h.test/hook?token=s3cret&team=ops&empty=",
            "https://h.test/hook?token=***&team=***&empty=***",
            "https://h.test/hook",
            id="every-parameter",
        ),
        pytest.param(
            "https://h.test/hook?abc123",
            "https://h.test/hook?***",
            "https://h.test/hook",
            id="bare-value",
        ),
        pytest.param(
            "https://h.test/hook?a=1&&b=2",
            "https://h.test/hook?a=***&&b=***",
            "https://h.test/hook",
            id="empty-piece-kept",
        ),
        pytest.param(
            "https://h.test/hook#frag",
            "https://h.test/hook#***",
            "https://h.test/hook",
            id="fragment",
        ),
        pytest.param(
            SINK,
            "https://***@hooks.test:8443/hook?token=***&team=***",
            "https://hooks.test:8443/hook",
            id="all-of-them",
        ),
        pytest.param(
            "http://u:p@[::1]:8080/hook?t=x",
            "http://***@[::1]:8080/hook?t=***",
            "http://[::1]:8080/hook",
            id="ipv6",
        ),
        pytest.param("http://[::1/hook?t=x", "***", "***", id="unparseable"),
    ],
)
def test_redact_url(url: str, shown: str, dropped: str) -> None:
    assert redact_url(url) == shown
    assert redact_url(url, drop=True) == dropped


@pytest.mark.parametrize(
    ("text", "url", "expected"),
    [
        pytest.param(
            "400, message='Bad status line', url='https://hooks.test:8443/hook?token=tok-5ecret&team=ops'",
            SINK,
            "400, message='Bad status line', url='https://hooks.test:8443/hook?token=***&team=***'",
            id="aiohttp-url-without-userinfo",
        ),
        pytest.param(
            f"cannot reach {SINK}",
            SINK,
            "cannot reach https://***@hooks.test:8443/hook?token=***&team=***",
            id="the-whole-url",
        ),
        pytest.param(
            "GET https://user:pa55word@hooks.test:8443/x",
            SINK,
            "GET https://***@hooks.test:8443/x",
            id="userinfo",
        ),
        pytest.param("auth pa55word refused", SINK, "auth *** refused", id="bare-password"),
        pytest.param("token tok-5ecret expired", SINK, "token *** expired", id="bare-long-value"),
        pytest.param(
            "url=/hook?token=a%2Fb%2Fc",
            "https://h.test/hook?token=a/b/c",
            "url=/hook?token=***",
            id="re-encoded",
        ),
        pytest.param(
            "url=/hook?token=a b+c",
            "https://h.test/hook?token=a%20b%2Bc",
            "url=/hook?token=***",
            id="decoded",
        ),
        pytest.param(
            "attempt=2 status=502 /hook?v=2",
            "https://h.test/hook?v=2",
            "attempt=2 status=502 /hook?v=***",
            id="short-value-only-as-a-pair",
        ),
        pytest.param("team ops", SINK, "team ops", id="short-value-not-bare"),
        pytest.param(
            "see https://h.test/x#tok-frag",
            "https://h.test/x#tok-frag",
            "see https://h.test/x#***",
            id="fragment",
        ),
        pytest.param("nothing here", SINK, "nothing here", id="absent"),
        pytest.param(
            "https://h.test/x", "https://h.test/x", "https://h.test/x", id="no-credentials"
        ),
        pytest.param("", SINK, "", id="empty"),
    ],
)
def test_scrub_url(text: str, url: str, expected: str) -> None:
    assert scrub_url(text, url) == expected


@pytest.mark.parametrize(
    ("url", "secrets"),
    [
        pytest.param("https://hooks.test/hook", [], id="none"),
        pytest.param(
            SINK, ["user:pa55word", "user%3Apa55word", "pa55word", "tok-5ecret"], id="sink"
        ),
        pytest.param("https://u:pw@h.test/x?v=2&format=json", [], id="all-too-short"),
        pytest.param(
            "https://h.test/x?key=a%2Fb%2Fc%2Fd",
            ["a%2Fb%2Fc%2Fd", "a/b/c/d"],
            id="spellings",
        ),
        pytest.param("https://h.test/x#fragment-token", ["fragment-token"], id="fragment"),
        pytest.param("http://[::1/x", [], id="unparseable"),
    ],
)
def test_url_secrets(url: str, secrets: list[str]) -> None:
    assert url_secrets(url) == secrets
    assert all(len(s) >= MIN_SECRET for s in secrets)
