"""Tests for trigger_engine.core.escape: untrusted text made safe to print, as a table."""

from __future__ import annotations

import pytest

from trigger_engine.core.escape import escape_controls


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        pytest.param("", "", id="empty"),
        pytest.param("lead-42 Ada Lovelace", "lead-42 Ada Lovelace", id="plain"),
        pytest.param("Zoë, 日本語, emoji 🙂", "Zoë, 日本語, emoji 🙂", id="unicode-unchanged"),
        pytest.param("a\\x1b b\\n", "a\\x1b b\\n", id="backslashes-unchanged"),
        pytest.param("a\nb", "a\\nb", id="newline"),
        pytest.param("a\r\nb\tc", "a\\r\\nb\\tc", id="cr-tab"),
        pytest.param("\x1b[2J", "\\x1b[2J", id="clear-screen"),
        pytest.param("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07", id="window-title-osc"),
        pytest.param("\x00\x01\x1f", "\\x00\\x01\\x1f", id="c0"),
        pytest.param("a\x7fb", "a\\x7fb", id="del"),
        pytest.param("\x80\x85\x9b2J\x9f", "\\x80\\x85\\x9b2J\\x9f", id="c1-csi"),
        pytest.param("\xa0\xff", "\xa0\xff", id="latin-1-printable-unchanged"),
        pytest.param("abc\u202edcba", "abc\\u202edcba", id="right-to-left-override"),
        pytest.param(
            "\u202a\u202b\u202c\u202d\u2066\u2067\u2068\u2069",
            "\\u202a\\u202b\\u202c\\u202d\\u2066\\u2067\\u2068\\u2069",
            id="bidi-embeddings-isolates",
        ),
        pytest.param("a\u2028b\u2029c", "a\\u2028b\\u2029c", id="line-paragraph-separators"),
        pytest.param("\u200b\u200d", "\u200b\u200d", id="zero-width-unchanged"),
        pytest.param(
            "k\n2026-01-01T00:00:00Z ERROR forged\x1b]0;pwned\x07\x1b[2J",
            "k\\n2026-01-01T00:00:00Z ERROR forged\\x1b]0;pwned\\x07\\x1b[2J",
            id="forged-log-line",
        ),
    ],
)
def test_escape_controls(text: str, shown: str) -> None:
    assert escape_controls(text) == shown


@pytest.mark.parametrize("code", [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x202E, 0x2069])
def test_nothing_escaped_is_left_raw(code: int) -> None:
    shown = escape_controls(f"x{chr(code)}y")
    assert chr(code) not in shown
    assert shown.isprintable()
    assert shown.isascii()
