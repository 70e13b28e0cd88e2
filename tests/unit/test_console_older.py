"""The events pages' way on: an "older" link after a full page; after a page that read only
the newest events before its cursor, the note saying how far back it looked, with a link
that goes on from there (carrying the filters), and no "older" link; nothing at the end."""

from __future__ import annotations

from trigger_engine.runtime.console.pages import _older

FILTERS = [("status", "dead"), ("sink", "crm")]


def test_a_full_page_links_to_older_events() -> None:
    link, note = _older("/events", FILTERS, {"next_cursor": "evt_9", "scanned_to": None})
    assert link == (
        '<p><a rel="next" href="/events?status=dead&amp;sink=crm&amp;cursor=evt_9">older</a></p>'
    )
    assert note == ""


def test_a_bounded_page_says_how_far_back_it_looked_and_goes_on_from_there() -> None:
    found = {"next_cursor": "evt_5", "scanned_to": "2026-12-01T10:00:00Z"}
    link, note = _older("/deliveries", FILTERS, found)
    assert link == ""
    assert "Searched back to 2026-12-01T10:00:00Z (the newest 20,000 events" in note
    assert 'href="/deliveries?status=dead&amp;sink=crm&amp;cursor=evt_5">search older' in note


def test_the_last_page_has_neither() -> None:
    assert _older("/events", [], {"next_cursor": None, "scanned_to": None}) == ("", "")
