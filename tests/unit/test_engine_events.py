"""Operational events, Slack bodies, secret rotation and new secrets: the pure parts.

Who receives an engine event (patterns, and the default that excludes them), what each one
holds, the cap per state change, the one Slack line per event, two signatures during a
rotation (verified with the reference ``standardwebhooks`` package) and ``whsec_`` secrets.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from trigger_engine.config import Sink, load_config
from trigger_engine.core import engine_events
from trigger_engine.core.engine_events import (
    ENGINE_EVENT_TYPES,
    DeadDelivery,
    Subscribers,
    about_deliveries_of,
    capped,
)
from trigger_engine.core.events import body, envelope, webhook_headers
from trigger_engine.core.redact import origin_only, path_secret
from trigger_engine.core.registry import matches, subscribes
from trigger_engine.core.signing import new_secret, secret_key, sign_all
from trigger_engine.core.slack import slack_text
from trigger_engine.delivery.attempt import body_for, headers_for
from trigger_engine.errors import ConfigError
from trigger_engine.types import DueDelivery

NEW = "whsec_" + base64.b64encode(b"the-new-secret-32-bytes-long-abc").decode()
OLD = "whsec_" + base64.b64encode(b"the-old-secret-32-bytes-long-xyz").decode()
T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


# --------------------------------------------------------------------------- who receives


@pytest.mark.parametrize(
    ("pattern", "event_type", "expected"),
    [
        ("engine.*", "engine.trigger_paused", True),
        ("engine.*", "engine.test", True),
        ("engine.*", "lead.new", False),
        ("engine.*", "engine", False),
        ("engine.trigger_*", "engine.trigger_failing", True),
        ("engine.trigger_*", "engine.sink_disabled", False),
        ("lead.*", "lead.updated", True),
        ("*", "connection.new", True),
        ("engine.sink_disabled", "engine.sink_disabled", True),
        ("engine.sink_disabled", "engine.sink_disabledx", False),
        ("lead.new", "lead_new", False),  # "." is not a wildcard
        ("engine.?", "engine.x", False),  # nor "?"
        ("engine.[a]", "engine.a", False),  # nor brackets
    ],
)
def test_patterns_match_with_star_only(pattern: str, event_type: str, expected: bool) -> None:
    assert matches(pattern, event_type) is expected


@pytest.mark.parametrize(
    ("events", "event_type", "expected"),
    [
        (None, "lead.new", True),  # no list: every item event type
        (None, "engine.trigger_paused", False),  # ... and none of the engine's own
        (("lead.new",), "engine.delivery_dead", False),
        (("lead.new", "engine.*"), "engine.delivery_dead", True),
        (("engine.item_quarantined",), "engine.item_quarantined", True),
        (("engine.item_quarantined",), "engine.trigger_paused", False),
        (("engine.*",), "lead.new", False),
    ],
)
def test_a_sink_receives_engine_events_only_when_its_list_names_them(
    events: tuple[str, ...] | None, event_type: str, expected: bool
) -> None:
    assert subscribes(events, event_type) is expected


def test_subscribers_fan_out_to_own_then_remote_sinks() -> None:
    subs = Subscribers(
        own={"crm": None, "ops": ("engine.*",), "audit": ("engine.sink_disabled",)},
        remote={"pager": ("engine.trigger_*",), "ops": None},
    )
    assert subs.sinks_for("engine.trigger_paused") == ["ops", "pager"]
    assert subs.sinks_for("engine.sink_disabled") == ["ops", "audit"]
    assert subs.sinks_for("lead.new") == ["crm", "ops"]  # remote "ops" takes every item
    assert engine_events.NOBODY.sinks_for("engine.trigger_paused") == []


# --------------------------------------------------------------------------- what they hold


def test_each_event_holds_its_reason_its_names_and_what_to_run_next() -> None:
    paused = engine_events.trigger_paused("acme", "leads", failures=20, since=T0, error="HTTP 503")
    assert (paused.type, paused.account, paused.trigger) == (
        "engine.trigger_paused",
        "acme",
        "leads",
    )
    assert paused.data["next"] == "trigger-engine triggers resume acme leads"
    assert "20 polls in a row failed since 2026-12-01T10:00:00Z" in paused.data["reason"]
    assert "HTTP 503" in paused.data["reason"]

    failing = engine_events.trigger_failing(
        "acme", "leads", failures=4, since=T0, now=T0 + timedelta(minutes=16), error="boom"
    )
    assert "have failed for 16m (4 in a row" in failing.data["reason"]
    assert failing.data["next"].startswith("trigger-engine check")

    disabled = engine_events.sink_disabled("crm", reason="the receiver answered 410 Gone")
    assert (disabled.account, disabled.trigger) == ("", "")  # no account applies
    assert disabled.data == {
        "reason": "sink crm was disabled: the receiver answered 410 Gone",
        "sink": "crm",
        "next": "trigger-engine sinks enable crm",
    }

    dead = engine_events.delivery_dead(
        DeadDelivery("crm", "evt_1", "lead.new", "acme", "leads", "L1", 3, "HTTP 500")
    )
    assert dead.data["next"] == "trigger-engine replay --event evt_1 --sink crm"
    assert "after 3 attempts; last: HTTP 500" in dead.data["reason"]
    assert (dead.data["key"], dead.data["account"]) == ("L1", "acme")

    held = engine_events.item_quarantined("acme", "leads", key="poison", reason="too big")
    assert held.data["key"] == "poison"
    assert held.data["next"] == "trigger-engine events --status quarantined --account acme"


def test_no_event_is_ever_about_a_delivery_of_an_engine_event() -> None:
    assert about_deliveries_of("lead.new")
    for event_type in ENGINE_EVENT_TYPES:
        assert not about_deliveries_of(event_type)


def test_one_state_change_makes_at_most_the_cap_and_one_summary() -> None:
    found = [
        engine_events.item_quarantined("acme", "leads", key=f"k{i}", reason="r") for i in range(25)
    ]
    kept = capped(found, limit=20)
    assert len(kept) == 21
    assert [e.data.get("key") for e in kept[:20]] == [f"k{i}" for i in range(20)]
    summary = kept[-1]
    assert (summary.type, summary.account, summary.trigger) == (
        "engine.item_quarantined",
        "acme",
        "leads",
    )
    assert summary.data["more"] == 5 and "5 more" in summary.data["reason"]
    assert capped(found[:20], limit=20) == found[:20]


def test_an_engine_event_without_account_has_a_null_account_in_the_envelope() -> None:
    delivery = due(event_type="engine.sink_disabled", account="", payload=b'{"sink":"crm"}')
    doc = orjson.loads(envelope(delivery))
    assert doc["account"] is None and doc["data"] == {"sink": "crm"}
    assert orjson.loads(envelope(due()))["account"] == "acme"


# --------------------------------------------------------------------------- slack


def due(
    *,
    event_type: str = "lead.new",
    account: str = "acme",
    payload: bytes = b'{"id":"L1","person":{"name":"Shaban Ali","email":"shaban@example.com"}}',
) -> DueDelivery:
    return DueDelivery(
        id=1,
        sink="s",
        attempts=0,
        event_id="evt_01TEST",
        event_type=event_type,
        account=account,
        created_at=T0,
        payload=payload,
    )


@pytest.mark.parametrize(
    ("event_type", "account", "item", "text"),
    [
        (
            "lead.new",
            "acme",
            {"id": "L1", "person": {"name": "Shaban Ali", "email": "shaban@example.com"}},
            "New lead.new for acme: Shaban Ali, shaban@example.com",
        ),
        (
            "connection.new",
            "acme",
            {"id": "C1", "firstName": "Ada", "lastName": "Lovelace", "email": ""},
            "New connection.new for acme: Ada Lovelace",
        ),
        (
            "campaign.new",
            "acme",
            {"key": 3, "name": "Q4 outreach"},
            "New campaign.new for acme: Q4 outreach",
        ),
        ("lead.new", "acme", {"id": "L9"}, "New lead.new for acme"),
        ("lead.new", "acme", [1, 2], "New lead.new for acme"),
        (
            "lead.new",
            "acme",
            {"name": "<!channel> & <https://evil|click>"},
            "New lead.new for acme: &lt;!channel&gt; &amp; &lt;https://evil|click&gt;",
        ),
        (
            "engine.trigger_paused",
            "acme",
            {
                "reason": "trigger acme/leads was paused: 3 failed",
                "next": "trigger-engine triggers resume acme leads",
            },
            "trigger-engine: trigger acme/leads was paused: 3 failed. "
            "Next: `trigger-engine triggers resume acme leads`",
        ),
        ("engine.test", "", {}, "trigger-engine: engine.test"),
    ],
)
def test_slack_text_is_one_human_line(
    event_type: str, account: str, item: object, text: str
) -> None:
    line = slack_text(event_type, account, orjson.dumps(item))
    assert line == text
    assert "\n" not in line


def test_a_slack_sink_gets_a_text_body_and_other_formats_are_unchanged() -> None:
    delivery = due()
    slack = Sink(name="s", url="https://hooks.example.com/services/T0/B0/abcdef", format="slack")
    assert orjson.loads(body_for(slack, delivery)) == {
        "text": "New lead.new for acme: Shaban Ali, shaban@example.com"
    }
    raw = Sink(name="r", url="https://h.example.com/", format="raw")
    assert body_for(raw, delivery) == delivery.payload
    assert body(delivery, raw=False) == envelope(delivery)


# --------------------------------------------------------------------------- secrets


def test_a_new_secret_is_whsec_and_32_random_bytes() -> None:
    made = {new_secret() for _ in range(50)}
    assert len(made) == 50
    for secret in made:
        assert secret.startswith("whsec_")
        assert len(secret_key(secret)) == 32
        Sink(name="s", url="https://h.example.com/", secret=secret)  # a valid sink secret


def headers_at(sink: Sink, moment: datetime, payload: bytes) -> dict[str, str]:
    delivery = due()
    return headers_for(sink, delivery, payload, int(moment.timestamp()))


def rotating(until: datetime) -> Sink:
    return Sink(
        name="s",
        url="https://h.example.com/",
        secret=NEW,
        previous_secret=OLD,
        previous_secret_until=until,
    )


def test_during_the_overlap_both_secrets_verify_and_after_it_only_the_new_one() -> None:
    now = datetime.now(UTC)  # standardwebhooks checks the timestamp against the clock
    payload = b'{"type":"lead.new"}'
    sink = rotating(until=now + timedelta(hours=1))
    headers = headers_at(sink, now, payload)
    signatures = headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    assert Webhook(NEW).verify(payload, headers) is not None
    assert Webhook(OLD).verify(payload, headers) is not None
    assert signatures[0] == sign_all([secret_key(NEW)], "evt_01TEST", int(now.timestamp()), payload)

    over = rotating(until=now - timedelta(seconds=1))
    headers = headers_at(over, now, payload)
    assert " " not in headers["webhook-signature"]
    Webhook(NEW).verify(payload, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(OLD).verify(payload, headers)


def test_without_a_rotation_there_is_one_signature() -> None:
    now = datetime.now(UTC)
    plain = Sink(name="s", url="https://h.example.com/", secret=NEW)
    headers = headers_at(plain, now, b"{}")
    assert " " not in headers["webhook-signature"]
    unsigned = webhook_headers(due(), b"{}", 1, key=None, extra={})
    assert "webhook-signature" not in unsigned


MINIMAL = """
[[accounts]]
name = "acme"
api_key = "k"

[triggers.leads]

[[sinks]]
name = "crm"
url = "https://h.example.com/hook"
"""


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "te.toml"
    path.write_text(text)
    return load_config(path)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            f'secret = "{NEW}"\nprevious_secret = "{OLD}"\n',
            "sinks[0].previous_secret: needs previous_secret_until beside it",
        ),
        (
            f'previous_secret = "{OLD}"\nprevious_secret_until = "2030-01-01T00:00:00Z"\n',
            "sinks[0].previous_secret: needs secret (the new one) beside it",
        ),
        (
            f'secret = "{NEW}"\nprevious_secret_until = "2030-01-01T00:00:00Z"\n',
            "sinks[0].previous_secret_until: goes with previous_secret, which is not set",
        ),
        (
            f'secret = "{NEW}"\nprevious_secret = "whsec_short"\n'
            'previous_secret_until = "2030-01-01T00:00:00Z"\n',
            'sinks[0].previous_secret: must be "whsec_" followed by the base64',
        ),
        (
            f'secret = "{NEW}"\nprevious_secret = "{OLD}"\nprevious_secret_until = "next week"\n',
            "sinks[0].previous_secret_until: must be an ISO 8601 time",
        ),
        ('events = ["engine.nope"]\n', "unknown event type 'engine.nope'"),
        ('events = ["nothing.*"]\n', "the pattern 'nothing.*' matches no event type"),
    ],
)
def test_rotation_and_subscriptions_are_checked_at_load(
    tmp_path: Path, extra: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, MINIMAL + extra)
    assert message in str(caught.value)
    assert OLD not in str(caught.value) and "whsec_short" not in str(caught.value)


def test_engine_types_and_patterns_are_accepted_and_secrets_redacted(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        MINIMAL + f'events = ["lead.new", "engine.*", "engine.test"]\nsecret = "{NEW}"\n'
        f'previous_secret = "{OLD}"\nprevious_secret_until = 2030-01-01T00:00:00+02:00\n'
        '[[sinks]]\nname = "slack"\nurl = "https://hooks.slack.example/services/T0/B0/tok3n"\n'
        'format = "slack"\nevents = ["engine.*"]\n',
    )
    sink = config.sinks[0]  # type: ignore[attr-defined]
    assert sink.events == ("lead.new", "engine.*", "engine.test")
    assert sink.previous_secret_until == datetime(2029, 12, 31, 22, 0, tzinfo=UTC)
    secrets = config.secrets()  # type: ignore[attr-defined]
    assert OLD in secrets and OLD.removeprefix("whsec_") in secrets
    assert "/services/T0/B0/tok3n" in secrets  # a Slack webhook's token is its path


def test_a_slack_webhook_url_is_shown_without_its_token_path() -> None:
    url = "https://user:pw@hooks.slack.example/services/T0/B0/s3cr3tT0ken?x=1"
    assert origin_only(url) == "https://hooks.slack.example/***"
    assert path_secret(url) == "/services/T0/B0/s3cr3tT0ken"
    assert path_secret("https://h.example.com/") is None  # nothing there to hide
    assert path_secret("https://h.example.com/hook") is None  # too short to be a token
