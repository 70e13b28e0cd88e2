"""The engine's own events through the real CLI, on SQLite and PostgreSQL: a trigger that
keeps failing (failing, then paused), a sink that answers 410, a delivery whose schedule is
used up and a quarantined item each reach the sink subscribed to ``engine.*``, signed
(with both secrets while one is rotated), and a Slack-compatible sink gets one line of
text; a sink without an ``events`` list gets the items and none of them (issue 14)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from standardwebhooks.webhooks import Webhook

from tests.e2e.conftest import ConfigWriter, run_cli
from tests.e2e.test_poisoned_items import set_poison
from tests.receiver import Answer, Receiver
from trigger_engine.sandbox import Fault, SimulatorThread

NEW = "whsec_" + base64.b64encode(b"alerts-new-secret-0123456789abcd").decode()
OLD = "whsec_" + base64.b64encode(b"alerts-old-secret-0123456789abcd").decode()


def once(workdir: Path, env: dict[str, str]) -> str:
    done = run_cli("run", "--once", cwd=workdir, env=env)
    assert done.returncode in (0, 1), done.stderr  # 1: the campaigns poll failed
    return done.stderr


def test_each_operational_event_arrives_signed_at_the_sinks_that_asked_for_it(
    simulator: SimulatorThread,
    write_config: ConfigWriter,
    workdir: Path,
    cli_env: dict[str, str],
    db_url: str,
) -> None:
    until = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    with (
        Receiver() as alerts,
        Receiver() as slack,
        Receiver() as crm,
        Receiver(lambda _r: Answer(status=410)) as gone,
        Receiver(lambda _r: Answer(status=500)) as flaky,
    ):
        write_config(
            base_url=simulator.base_url,
            database=db_url,
            sinks=f"""
[[sinks]]
name = "alerts"
url = "{alerts.url}"
events = ["engine.*"]
secret = "{NEW}"
previous_secret = "{OLD}"
previous_secret_until = "{until}"

[[sinks]]
name = "slack"
url = "{slack.url}"
events = ["engine.trigger_paused"]
format = "slack"

[[sinks]]
name = "crm"
url = "{crm.url}"

[[sinks]]
name = "gone"
url = "{gone.url}"
events = ["lead.new"]

[[sinks]]
name = "flaky"
url = "{flaky.url}"
events = ["lead.new"]
retry = {{ schedule = ["100ms"] }}
""",
        )
        # campaigns: every poll fails (failing after 3 intervals; paused at 2 failures)
        path = workdir / "trigger-engine.toml"
        path.write_text(
            path.read_text().replace(
                '[triggers.campaigns]\ninterval = "5m"',
                '[triggers.campaigns]\ninterval = "100ms"\npause_after = "100ms"\n'
                "pause_after_failures = 2",
            )
        )
        simulator.sim.inject(Fault(status=503, count=1000, paths=("/campaigns",)))

        first = once(workdir, cli_env)  # seeds leads and connections; campaigns fails once
        assert "engine." not in first
        set_poison(db_url, on=True)
        items = [{"id": "good-1", "person": {"name": "Ada Lovelace"}}, {"id": "poison"}]
        simulator.sim.inject(
            Fault(status=200, body=orjson.dumps(items), count=10, paths=("/leads",))
        )

        second = once(workdir, cli_env)  # campaigns failing and paused; poison quarantined
        assert "poll.paused" in second and "item.quarantined" in second
        once(workdir, cli_env)  # the 410 (made during the last run) is sent; flaky dies
        once(workdir, cli_env)  # the dead delivery's report is sent
        set_poison(db_url, on=False)

        received = alerts.wait_for(5)
        by_type: dict[str, dict[str, Any]] = {}
        for r in received:
            # signed with the new secret and, during the rotation, with the old one too
            assert len(r.headers["webhook-signature"].split(" ")) == 2
            doc = Webhook(NEW).verify(r.body, r.headers)
            assert Webhook(OLD).verify(r.body, r.headers) == doc
            assert r.headers["webhook-id"].startswith("evt_")
            by_type[doc["type"]] = doc
        assert sorted(by_type) == [
            "engine.delivery_dead",
            "engine.item_quarantined",
            "engine.sink_disabled",
            "engine.trigger_failing",
            "engine.trigger_paused",
        ]
        assert len(received) == 5  # each once

        paused = by_type["engine.trigger_paused"]
        assert paused["account"] == "acme"
        assert paused["data"]["trigger"] == "campaigns"
        assert paused["data"]["next"] == "trigger-engine triggers resume acme campaigns"
        assert "HTTP 503" in paused["data"]["reason"]
        assert by_type["engine.trigger_failing"]["data"]["failures"] == 2
        disabled = by_type["engine.sink_disabled"]
        assert disabled["account"] is None
        assert disabled["data"]["sink"] == "gone"
        assert disabled["data"]["next"] == "trigger-engine sinks enable gone"
        dead = by_type["engine.delivery_dead"]
        assert (dead["account"], dead["data"]["sink"], dead["data"]["key"]) == (
            "acme",
            "flaky",
            "good-1",
        )
        assert dead["data"]["next"].startswith("trigger-engine replay --event evt_")
        quarantined = by_type["engine.item_quarantined"]
        assert (quarantined["data"]["key"], quarantined["data"]["trigger"]) == ("poison", "leads")

        # the Slack-compatible sink asked for pauses only: one line of text
        (line,) = [orjson.loads(r.body) for r in slack.requests]
        assert line == {
            "text": f"trigger-engine: {paused['data']['reason']}. "
            "Next: `trigger-engine triggers resume acme campaigns`"
        }
        # the CRM (no events list) got the lead and nothing of the engine's own
        crm_types = [orjson.loads(r.body)["type"] for r in crm.requests]
        assert crm_types == ["lead.new"]
        assert len(gone.requests) == 1 and len(flaky.requests) == 2

        # the events are listed and replayable like any other
        listed = run_cli(
            "events", "--type", "engine.sink_disabled", "--json", cwd=workdir, env=cli_env
        )
        assert listed.returncode == 0, listed.stderr
        (row,) = orjson.loads(listed.stdout)
        assert [(d["sink"], d["status"]) for d in row["deliveries"]] == [("alerts", "delivered")]
        assert (row["account"], row["trigger"]) == (None, None)  # no account applies
        assert row["key"] == row["id"]  # each occurrence is its own event
        text = run_cli("events", "--type", "engine.trigger_paused", cwd=workdir, env=cli_env)
        assert "engine.trigger_paused  acme  key=evt_" in text.stdout
        assert "alerts: delivered" in text.stdout and "slack: delivered" in text.stdout


def test_sinks_secret_prints_a_new_secret_and_needs_no_configuration(tmp_path: Path) -> None:
    made = []
    for _ in range(2):
        done = run_cli("sinks", "secret", cwd=tmp_path, env={"TRIGGER_ENGINE_CONFIG": ""})
        assert (done.returncode, done.stderr) == (0, "")
        (line,) = done.stdout.splitlines()
        assert line.startswith("whsec_")
        assert len(base64.b64decode(line.removeprefix("whsec_"), validate=True)) == 32
        Webhook(line)  # the reference package takes it
        made.append(line)
    assert made[0] != made[1]
    assert not list(tmp_path.iterdir())  # no file read or written
    wrong = run_cli("sinks", "secret", "crm", cwd=tmp_path)
    assert wrong.returncode == 2 and "takes no NAME" in wrong.stderr
