"""Tests for trigger_engine.core.words: counts with the right noun, and the hint a command
gives for a name that names nothing."""

from __future__ import annotations

import pytest

from trigger_engine.core.words import closest, did_you_mean, plural, plural_of


@pytest.mark.parametrize(
    ("n", "noun", "expected"),
    [
        (0, "delivery", "0 deliveries"),
        (1, "delivery", "1 delivery"),
        (2, "delivery", "2 deliveries"),
        (1, "event", "1 event"),
        (3, "event", "3 events"),
        (1, "item", "1 item"),
        (2, "item", "2 items"),
        (1, "remembered item", "1 remembered item"),
        (5, "poll", "5 polls"),
        (2, "match", "2 matches"),
        (2, "key", "2 keys"),
        (2, "entry", "2 entries"),
        (2, "delivery attempt", "2 delivery attempts"),
    ],
)
def test_a_count_takes_the_noun_that_goes_with_it(n: int, noun: str, expected: str) -> None:
    assert plural(n, noun) == expected


def test_an_explicit_plural_wins() -> None:
    assert plural(2, "person", "people") == "2 people"
    assert plural(1, "person", "people") == "1 person"


@pytest.mark.parametrize(
    ("noun", "expected"),
    [
        ("sink", "sinks"),
        ("status", "statuses"),
        ("box", "boxes"),
        ("day", "days"),
        ("copy", "copies"),
    ],
)
def test_plural_of(noun: str, expected: str) -> None:
    assert plural_of(noun) == expected


@pytest.mark.parametrize(
    ("given", "known", "expected"),
    [
        (
            "leads.new",
            ["lead.new", "connection.new", "campaign.new"],
            " (did you mean 'lead.new'?)",
        ),
        (
            "deliverd",
            ["pending", "failed", "delivered", "dead", "held"],
            " (did you mean 'delivered'?)",
        ),
        ("crn", ["crm", "audit"], " (did you mean 'crm'?)"),
        ("zzzzzz", ["crm", "audit"], ""),
        ("crm", [], ""),
    ],
)
def test_did_you_mean(given: str, known: list[str], expected: str) -> None:
    assert did_you_mean(given, known) == expected


def test_closest_ignores_repeats_and_order() -> None:
    assert closest("engine.tset", ["engine.test", "engine.test", "lead.new"]) == "engine.test"
