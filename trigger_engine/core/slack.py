"""``format = "slack"``: a body a Slack-compatible incoming webhook takes, ``{"text": ...}``,
one human line per event. Pure.

* an operational event (``engine.*``): its reason and what to run next, e.g.
  ``trigger-engine: trigger acme/leads was paused: 20 polls in a row failed ... Next:
  `trigger-engine triggers resume acme leads` ``;
* an item event: ``New lead.new for acme: Shaban Ali, shaban@example.com`` (the item's
  name and email when it has them: at the top level, under ``person``, or as first and
  last names).

Text that others wrote (names, reasons quoting an upstream) has Slack's three control
characters escaped (``&``, ``<``, ``>``), so it cannot mention ``@channel`` or forge a link,
and each part is cut to a readable length.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from trigger_engine.core.exact_json import parse_json
from trigger_engine.core.registry import is_engine_event

MAX_PART = 300  # characters of one name, email or reason in a line

_NAME_FIELDS = ("name", "full_name", "fullName")
_FIRST_LAST = (("first_name", "last_name"), ("firstName", "lastName"))
_EMAIL_FIELDS = ("email", "work_email", "personal_email")


def escape(text: str) -> str:
    """``text`` safe inside a Slack message: ``&``, ``<`` and ``>`` as entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _part(value: object) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        value = str(value)
    if not isinstance(value, str):
        return None
    text = " ".join(value.split())
    if not text:
        return None
    if len(text) > MAX_PART:
        text = text[: MAX_PART - 1] + "…"
    return escape(text)


def _name(item: Mapping[str, Any]) -> str | None:
    for field in _NAME_FIELDS:
        if found := _part(item.get(field)):
            return found
    for first, last in _FIRST_LAST:
        both = " ".join(p for p in (_part(item.get(first)), _part(item.get(last))) if p)
        if both:
            return both
    return None


def _email(item: Mapping[str, Any]) -> str | None:
    for field in _EMAIL_FIELDS:
        if found := _part(item.get(field)):
            return found
    return None


def who(item: object) -> str | None:
    """The item's name and email as a few words ("Shaban Ali, shaban@example.com"), from
    its top level or its ``person``; None when it has neither."""
    if not isinstance(item, Mapping):
        return None
    person = item.get("person")
    places = [item, person] if isinstance(person, Mapping) else [item]
    name = next((n for p in places if (n := _name(p))), None)
    email = next((e for p in places if (e := _email(p))), None)
    found = ", ".join(p for p in (name, email) if p)
    return found or None


def slack_text(event_type: str, account: str, payload: bytes) -> str:
    """The one line a Slack channel shows for an event (see the module)."""
    try:
        data = parse_json(payload)
    except ValueError:
        data = None
    kind = escape(event_type)
    if is_engine_event(event_type):
        fields = data if isinstance(data, Mapping) else {}
        reason = _part(fields.get("reason")) or kind
        line = f"trigger-engine: {reason}"
        if todo := _part(fields.get("next")):
            line += f". Next: `{todo}`"
        return line
    line = f"New {kind} for {escape(account)}" if account else f"New {kind}"
    if found := who(data):
        line += f": {found}"
    return line


def slack_body(event_type: str, account: str, payload: bytes) -> bytes:
    """``{"text": ...}`` for an event (:func:`slack_text`)."""
    return orjson.dumps({"text": slack_text(event_type, account, payload)})
