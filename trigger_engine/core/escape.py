"""Untrusted text made safe to print: control characters as visible escapes.

An item key, an upstream header or a receiver's error message is text someone else wrote. Printed
raw on a terminal or in a text log, a newline forges a log line, ``ESC [2J`` clears the screen,
``ESC ]0;...BEL`` changes the window title, and a bidi override (U+202E) shows text in another
order than it is stored. :func:`escape_controls` is applied where text leaves the engine as a
line (the CLI's text output, the text log); JSON outputs escape by themselves and stay exact.

Escaped: C0 controls (U+0000-U+001F), DEL, C1 controls (U+0080-U+009F), the bidi embeddings,
overrides and isolates (U+202A-U+202E, U+2066-U+2069) and the line and paragraph separators
(U+2028, U+2029, which ``str.splitlines`` and many viewers take for line breaks). A backslash is
left as it is: the result is for reading, not for parsing back.

Pure: a string in, a string out.
"""

from __future__ import annotations

_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(code: int) -> str:
    char = chr(code)
    if char in _SHORT:
        return _SHORT[char]
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


_ESCAPED = [
    *range(0x00, 0x20),
    0x7F,
    *range(0x80, 0xA0),
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
    0x2028,
    0x2029,
]
_TABLE = {code: _escape(code) for code in _ESCAPED}


def escape_controls(text: str) -> str:
    """``text`` with each control character, bidi control and line separator written as a
    visible escape (``\\n``, ``\\x1b``, ``\\u202e``); every other character unchanged."""
    if text.isprintable():  # the common case: nothing to escape (fast, in C)
        return text
    return text.translate(_TABLE)
