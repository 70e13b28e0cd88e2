"""Delivery through the real CLI against a real receiver that fails in planned ways.

Each test seeds with one ``run --once`` (the first poll only remembers what exists), adds
items to the simulator, then drives ``run --once`` (or the ``run`` daemon where timing
matters) and inspects the outcome with ``events --json`` / ``status --json``. Retry
schedules are short (``STEP``): a retry is due before the next CLI process claims anything,
so each ``run --once`` makes exactly one attempt per due delivery.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from standardwebhooks.webhooks import Webhook

from tests.e2e.conftest import SECRET, ConfigWriter, run_cli, spawn_cli
from tests.receiver import Answer, Received, Receiver
from trigger_engine.sandbox import SimulatorThread

Env = dict[str, str]

# The retry step: due (±20% jitter) long before the next CLI process claims anything (that
# takes 0.8 s or more: interpreter, imports, store, polls), yet not during the drain of the
# run that scheduled it, which with an instant receiver lasts a few milliseconds. (10 ms
# would be enough for the first but not reliably for the second: see
# test_run_once_does_not_retry_what_fell_due_during_its_own_drain.)
STEP = "300ms"


# --------------------------------------------------------------------------- helpers


class Answers:
    """A receiver plan: these answers in order, then ``then`` for ever (thread-safe)."""

    def __init__(self, *answers: Answer, then: Answer | None = None) -> None:
        self._answers = list(answers)
        self.then = then or Answer()
        self._lock = threading.Lock()

    def __call__(self, _r: Received) -> Answer:
        with self._lock:
            return self._answers.pop(0) if self._answers else self.then


def status(code: int, *headers: tuple[str, str]) -> Answer:
    return Answer(status=code, headers=headers)


def sink(
    name: str,
    url: str,
    *,
    schedule: tuple[str, ...] = (STEP, STEP, STEP),
    extra: str = "",
) -> str:
    steps = ", ".join(f'"{s}"' for s in schedule)
    return (
        f'\n[[sinks]]\nname = "{name}"\nurl = "{url}"\nsecret = "{SECRET}"\n{extra}\n'
        f"[sinks.retry]\nschedule = [{steps}]\n"
    )


def verify(request: Received) -> dict[str, Any]:
    payload = Webhook(SECRET).verify(request.body, request.headers)
    assert isinstance(payload, dict)
    return payload


def ids(requests: list[Received]) -> list[str]:
    return [r.headers["webhook-id"] for r in requests]


def cli(*args: str, cwd: Path, env: Env) -> subprocess.CompletedProcess[str]:
    done = run_cli(*args, cwd=cwd, env=env)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


def once(cwd: Path, env: Env) -> str:
    """``run --once``; its last line (the delivery summary)."""
    return cli("run", "--once", cwd=cwd, env=env).stdout.strip().splitlines()[-1]


def summary(attempted: int, delivered: int, retry: int, dead: int) -> str:
    return (
        f"deliveries: {attempted} attempted, {delivered} delivered, "
        f"{retry} to retry later, {dead} dead"
    )


def events_json(cwd: Path, env: Env, *args: str, engine: bool = False) -> list[dict[str, Any]]:
    """``events --json``: the item events, and with ``engine`` the engine's own too."""
    found = orjson.loads(cli("events", "--json", *args, cwd=cwd, env=env).stdout)
    assert isinstance(found, list)
    return [e for e in found if engine or not e["type"].startswith("engine.")]


def status_json(cwd: Path, env: Env) -> dict[str, Any]:
    doc = orjson.loads(cli("status", "--json", cwd=cwd, env=env).stdout)
    assert isinstance(doc, dict)
    return doc


def delivery(event: dict[str, Any], sink_name: str) -> dict[str, Any]:
    (found,) = [d for d in event["deliveries"] if d["sink"] == sink_name]
    assert isinstance(found, dict)
    return found


def sink_row(doc: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [s for s in doc["sinks"] if s["name"] == name]
    assert isinstance(found, dict)
    return found


def parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def seed(
    simulator: SimulatorThread, write_config: ConfigWriter, workdir: Path, env: Env, sinks: str
) -> None:
    write_config(base_url=simulator.base_url, sinks=sinks)
    assert once(workdir, env) == summary(0, 0, 0, 0)


# --------------------------------------------------------------------------- 1, 2: retries


def test_500_500_then_200_is_three_attempts_with_one_webhook_id(
    simulator: SimulatorThread, write_config: ConfigWriter, workdir: Path, cli_env: Env
) -> None:
    with Receiver(Answers(status(500), status(500))) as crm:
        seed(simulator, write_config, workdir, cli_env, sink("crm", crm.url))
        simulator.sim.add_lead()

        assert once(workdir, cli_env) == summary(1, 0, 1, 0)
        assert once(workdir, cli_env) == summary(1, 0, 1, 0)
        assert once(workdir, cli_env) == summary(1, 1, 0, 0)
        assert once(workdir, cli_env) == summary(0, 0, 0, 0)

        assert len(crm.requests) == 3
        assert len(set(ids(crm.requests))) == 1
        bodies = [verify(r) for r in crm.requests]
        assert bodies[0] == bodies[1] == bodies[2]

        (event,) = events_json(workdir, cli_env)
        assert event["id"] == crm.requests[0].headers["webhook-id"]
        d = delivery(event, "crm")
        assert (d["status"], d["attempts"], d["last_status_code"]) == ("delivered", 3, 200)
        assert d["delivered_at"] is not None and d["in_flight"] is False


def test_a_used_up_schedule_makes_the_delivery_dead(
    simulator: SimulatorThread, write_config: ConfigWriter, workdir: Path, cli_env: Env
) -> None:
    with Receiver(Answers(then=status(500))) as crm:
        crm_sink = sink("crm", crm.url, schedule=(STEP, STEP))
        seed(simulator, write_config, workdir, cli_env, crm_sink)
        simulator.sim.add_lead()

        assert once(workdir, cli_env) == summary(1, 0, 1, 0)
        assert once(workdir, cli_env) == summary(1, 0, 1, 0)
        assert once(workdir, cli_env) == summary(1, 0, 0, 1)
        assert once(workdir, cli_env) == summary(0, 0, 0, 0)

        assert len(crm.requests) == 3
        assert len(set(ids(crm.requests))) == 1
        for r in crm.requests:
            verify(r)

        (event,) = events_json(workdir, cli_env)
        d = delivery(event, "crm")
        assert (d["status"], d["attempts"], d["last_status_code"]) == ("dead", 3, 500)
        assert d["next_attempt_at"] is None
        # reported by an engine.delivery_dead event, sent to no sink: none asked for it
        (alert,) = events_json(workdir, cli_env, "--type", "engine.delivery_dead", engine=True)
        assert (alert["account"], alert["deliveries"]) == ("acme", [])

        row = sink_row(status_json(workdir, cli_env), "crm")
        assert (row["dead"], row["pending"], row["failed"], row["delivered"]) == (1, 0, 0, 0)
        assert row["state"] == "enabled"


def test_run_once_does_not_retry_what_fell_due_during_its_own_drain(
    simulator: SimulatorThread, write_config: ConfigWriter, workdir: Path, cli_env: Env
) -> None:
    """``run --once`` "delivers everything due now, exits; retries due later stay pending".
    Two deliveries in flight together: one fails at once (its retry falls due 10 ms later),
    the other takes 0.5 s. The failed one must wait for the next run, not be attempted again
    while this run waits for the slow one."""
    with Receiver(Answers(status(500), Answer(delay=0.5))) as crm:
        crm_sink = sink("crm", crm.url, schedule=("10ms", "10ms"), extra="max_in_flight = 2")
        seed(simulator, write_config, workdir, cli_env, crm_sink)
        simulator.sim.add_lead()
        simulator.sim.add_lead()

        assert once(workdir, cli_env) == summary(2, 1, 1, 0)
        assert len(crm.requests) == 2
        assert len(set(ids(crm.requests))) == 2


# --------------------------------------------------------------------------- 3: Retry-After


def test_retry_after_pushes_the_next_attempt_past_the_schedule(
    simulator: SimulatorThread, write_config: ConfigWriter, workdir: Path, cli_env: Env
) -> None:
    with Receiver(Answers(status(429, ("Retry-After", "3600")))) as crm:
        seed(simulator, write_config, workdir, cli_env, sink("crm", crm.url, schedule=(STEP,)))
        simulator.sim.add_lead()

        assert once(workdir, cli_env) == summary(1, 0, 1, 0)
        (event,) = events_json(workdir, cli_env)
        checked_at = datetime.now(UTC)
        d = delivery(event, "crm")
        assert (d["status"], d["attempts"], d["last_status_code"]) == ("failed", 1, 429)
        wait = (parse_ts(d["next_attempt_at"]) - checked_at).total_seconds()
        assert 3500 <= wait <= 3600, d

        # not due: the next run leaves it alone (the short schedule step does not win)
        assert once(workdir, cli_env) == summary(0, 0, 0, 0)
        assert len(crm.requests) == 1
        verify(crm.requests[0])


# --------------------------------------------------------------------------- 4: 410 Gone


def test_410_disables_the_sink_and_holds_its_deliveries_until_enabled(
    simulator: SimulatorThread, write_config: ConfigWriter, workdir: Path, cli_env: Env
) -> None:
    with Receiver(Answers(then=status(410))) as crm, Receiver() as audit:
        seed(
            simulator,
            write_config,
            workdir,
            cli_env,
            sink("crm", crm.url, extra="max_in_flight = 1") + sink("audit", audit.url),
        )
        simulator.sim.add_lead()
        simulator.sim.add_lead()

        # crm answers its first delivery 410: it is disabled, and its deliveries (that one
        # included) are held, not dead; the audit sink is not affected
        assert once(workdir, cli_env) == summary(3, 2, 1, 0)
        assert len(crm.requests) == 1 and len(audit.requests) == 2
        gone_id = crm.requests[0].headers["webhook-id"]
        verify(crm.requests[0])

        found = {e["id"]: e for e in events_json(workdir, cli_env)}
        assert set(found) == set(ids(audit.requests))
        first = delivery(found[gone_id], "crm")
        assert (first["status"], first["attempts"], first["last_status_code"]) == ("held", 1, 410)
        (other_id,) = set(found) - {gone_id}
        other = delivery(found[other_id], "crm")
        assert (other["status"], other["attempts"]) == ("held", 0)
        assert other["last_error"] == "sink disabled"
        assert all(delivery(e, "audit")["status"] == "delivered" for e in found.values())

        doc = status_json(workdir, cli_env)
        row = sink_row(doc, "crm")
        assert row["state"] == "disabled" and "410" in row["disabled_reason"]
        assert (row["held"], row["dead"], row["pending"], row["failed"]) == (2, 0, 0, 0)
        assert sink_row(doc, "audit")["state"] == "enabled"
        listing = cli("sinks", cwd=workdir, env=cli_env).stdout
        (crm_line,) = [line for line in listing.splitlines() if line.startswith("crm ")]
        assert "disabled" in crm_line and "410" in crm_line and "held 2" in crm_line

        # a new event: held for the disabled sink, nothing sent to it
        simulator.sim.add_lead()
        assert once(workdir, cli_env) == summary(1, 1, 0, 0)
        assert len(crm.requests) == 1 and len(audit.requests) == 3
        assert sink_row(status_json(workdir, cli_env), "crm")["held"] == 3

        # replay while disabled: skipped, and said so (the contract)
        out = cli("replay", "--since", "1h", "--sink", "crm", cwd=workdir, env=cli_env).stdout
        assert "queued 0 deliveries (of 0 events)" in out
        assert "skipped 3 deliveries to disabled sinks" in out

        # re-enable, the receiver is back: the three held ones are sent, in order, with
        # their original webhook-ids, once each
        crm.plan = lambda _r: Answer()
        enabled = cli("sinks", "enable", "crm", cwd=workdir, env=cli_env).stdout
        assert "sink 'crm' enabled" in enabled
        assert "3 held deliveries due now" in enabled
        assert once(workdir, cli_env) == summary(3, 3, 0, 0)

        assert len(audit.requests) == 3
        redelivered = crm.requests[1:]
        # the order they were created in: crm (max_in_flight = 1) was sent the first one
        # first; audit's first two were sent side by side, so only its third is ordered
        assert ids(redelivered) == [gone_id, other_id, ids(audit.requests)[2]]
        for r in redelivered:
            verify(r)
        for e in events_json(workdir, cli_env):
            d = delivery(e, "crm")
            attempts = 2 if e["id"] == gone_id else 1
            assert (d["status"], d["attempts"], d["last_status_code"]) == (
                "delivered",
                attempts,
                200,
            )
        print(
            f"\n410 then enable: {len(redelivered)} held deliveries sent once each, in order, "
            "with their original webhook-ids"
        )


def test_a_delivery_in_flight_when_410_disables_the_sink_keeps_its_real_outcome(
    simulator: SimulatorThread, write_config: ConfigWriter, workdir: Path, cli_env: Env
) -> None:
    """Two deliveries to one sink in flight together: the first answer is 410 (the sink is
    disabled), the other is a 200 that arrives 1 s later. The receiver accepted that event,
    run --once counts it delivered, and so must the store (not held, 0 attempts)."""
    plan = Answers(status(410), Answer(delay=1.0))
    answered: dict[str, Answer] = {}

    def recording(r: Received) -> Answer:
        answer = plan(r)
        answered[r.headers["webhook-id"]] = answer
        return answer

    with Receiver(recording) as crm:
        seed(simulator, write_config, workdir, cli_env, sink("crm", crm.url))
        simulator.sim.add_lead()
        simulator.sim.add_lead()

        assert once(workdir, cli_env) == summary(2, 1, 1, 0)
        assert len(crm.requests) == 2
        (accepted,) = [i for i, a in answered.items() if a.status == 200]
        (gone,) = [i for i, a in answered.items() if a.status == 410]

        found = {e["id"]: delivery(e, "crm") for e in events_json(workdir, cli_env)}
        assert (found[gone]["status"], found[gone]["attempts"]) == ("held", 1)
        assert sink_row(status_json(workdir, cli_env), "crm")["state"] == "disabled"
        ok = found[accepted]
        assert (ok["status"], ok["attempts"], ok["last_status_code"]) == ("delivered", 1, 200), ok


# --------------------------------------------------------------------------- 5: timeout


def test_a_timed_out_attempt_is_retried_with_the_same_webhook_id(
    simulator: SimulatorThread, write_config: ConfigWriter, workdir: Path, cli_env: Env
) -> None:
    with Receiver(Answers(Answer(delay=1.5))) as crm:
        seed(
            simulator,
            write_config,
            workdir,
            cli_env,
            sink("crm", crm.url, extra='timeout = "300ms"'),
        )
        simulator.sim.add_lead()

        assert once(workdir, cli_env) == summary(1, 0, 1, 0)
        (event,) = events_json(workdir, cli_env)
        d = delivery(event, "crm")
        assert (d["status"], d["attempts"], d["last_status_code"]) == ("failed", 1, None)
        assert "timed out" in d["last_error"]

        assert once(workdir, cli_env) == summary(1, 1, 0, 0)
        assert len(crm.requests) == 2
        assert ids(crm.requests) == [event["id"], event["id"]]
        for r in crm.requests:
            verify(r)
        (event,) = events_json(workdir, cli_env)
        d = delivery(event, "crm")
        assert (d["status"], d["attempts"], d["last_status_code"]) == ("delivered", 2, 200)


# --------------------------------------------------------------------------- 6: slow sink


def test_a_slow_sink_does_not_hold_back_a_healthy_one(
    simulator: SimulatorThread, write_config: ConfigWriter, workdir: Path, cli_env: Env
) -> None:
    with Receiver(lambda _r: Answer(delay=2.0)) as slow, Receiver() as fast:
        write_config(
            base_url=simulator.base_url,
            sinks=sink("slow", slow.url, extra="max_in_flight = 1") + sink("fast", fast.url),
            interval="200ms",
        )
        assert once(workdir, cli_env) == summary(0, 0, 0, 0)
        for _ in range(5):
            simulator.sim.add_lead()

        daemon = spawn_cli("run", cwd=workdir, env=cli_env)
        try:
            fast.wait_for(5, timeout=30)
            at_that_moment = len(slow.requests)
            slow.wait_for(2, timeout=30)  # it does progress, one at a time
        finally:
            daemon.send_signal(signal.SIGTERM)
            _out, err = daemon.communicate(timeout=30)
        assert daemon.returncode == 0, err
        assert at_that_moment <= 1  # fast got all 5 before slow got its 2nd
        assert "engine.stopped" in err

        assert len(fast.requests) == 5 and len(set(ids(fast.requests))) == 5
        for r in fast.requests + slow.requests:
            verify(r)
        assert set(ids(slow.requests)) <= set(ids(fast.requests))

        # what slow received was recorded (in-flight work finished within the grace);
        # the rest waits, unclaimed, for the next start
        found = events_json(workdir, cli_env)
        assert len(found) == 5
        assert all(delivery(e, "fast")["status"] == "delivered" for e in found)
        slow_states = Counter(delivery(e, "slow")["status"] for e in found)
        assert slow_states == Counter(
            {"delivered": len(slow.requests), "pending": 5 - len(slow.requests)}
        )
        assert not any(d["in_flight"] for e in found for d in e["deliveries"])


# --------------------------------------------------------------------------- 7: replay


def type_plan(lead_failures: int) -> Callable[[Received], Answer]:
    """Connections: always 500. Leads: 500 for their first ``lead_failures`` attempts."""
    seen: Counter[str] = Counter()
    lock = threading.Lock()

    def plan(r: Received) -> Answer:
        with lock:
            seen[r.headers["webhook-id"]] += 1
            n = seen[r.headers["webhook-id"]]
        kind = orjson.loads(r.body)["type"]
        if kind == "connection.new" or n <= lead_failures:
            return status(500)
        return Answer()

    return plan


def test_replay_resends_with_the_same_webhook_id_and_a_fresh_history(
    simulator: SimulatorThread, write_config: ConfigWriter, workdir: Path, cli_env: Env
) -> None:
    with Receiver(type_plan(lead_failures=1)) as crm:
        beta = f'\n[[accounts]]\nname = "beta"\napi_key = "{cli_env["ALFRED_API_KEY"]}"\n'
        seed(
            simulator,
            write_config,
            workdir,
            cli_env,
            sink("crm", crm.url, schedule=(STEP,)) + beta,
        )
        simulator.sim.add_lead()
        simulator.sim.add_connection()

        # two accounts x (a lead, a connection): leads 500 then 200; connections dead
        assert once(workdir, cli_env) == summary(4, 0, 4, 0)
        assert once(workdir, cli_env) == summary(4, 2, 0, 2)
        found = {(e["account"], e["type"]): e for e in events_json(workdir, cli_env)}
        assert len(found) == 4
        acme_lead = found["acme", "lead.new"]["id"]
        for (_account, kind), e in found.items():
            d = delivery(e, "crm")
            want = "delivered" if kind == "lead.new" else "dead"
            assert (d["status"], d["attempts"]) == (want, 2)

        def replay(*args: str) -> str:
            return cli("replay", *args, cwd=workdir, env=cli_env).stdout

        # dry runs count and change nothing
        assert replay("--event", acme_lead, "--dry-run").startswith(
            "would queue 1 delivery (of 1 event)"
        )
        assert "would queue 2 deliveries (of 2 events)" in replay(
            "--since", "1h", "--type", "lead.new", "--dry-run"
        )
        assert "would queue 2 deliveries (of 2 events)" in replay(
            "--since", "1h", "--account", "beta", "--dry-run"
        )
        assert "would queue 1 delivery (of 1 event)" in replay(
            "--since", "1h", "--account", "beta", "--type", "connection.new", "--dry-run"
        )
        after_dry = {(e["account"], e["type"]): e for e in events_json(workdir, cli_env)}
        assert after_dry == found
        assert len(crm.requests) == 8

        # an unknown sink name: exit 2, one sentence
        bad = run_cli("replay", "--since", "1h", "--sink", "nope", cwd=workdir, env=cli_env)
        assert bad.returncode == 2
        assert bad.stdout == ""
        assert len(bad.stderr.strip().splitlines()) == 1 and "'nope'" in bad.stderr

        # the real thing: one event by id, and the dead ones by status
        assert "queued 1 delivery (of 1 event)" in replay("--event", acme_lead)
        assert "queued 2 deliveries (of 2 events)" in replay("--since", "1h", "--status", "dead")
        crm.plan = lambda _r: Answer()
        assert once(workdir, cli_env) == summary(3, 3, 0, 0)

        resent = crm.requests[8:]
        for r in resent:
            verify(r)
        want_ids = {
            acme_lead,
            found["acme", "connection.new"]["id"],
            found["beta", "connection.new"]["id"],
        }
        assert sorted(ids(resent)) == sorted(want_ids)

        now_found = {(e["account"], e["type"]): e for e in events_json(workdir, cli_env)}
        for key, e in now_found.items():
            d = delivery(e, "crm")
            if e["id"] in want_ids:  # a fresh history: one attempt, the replayed one
                assert (d["status"], d["attempts"], d["last_status_code"]) == (
                    "delivered",
                    1,
                    200,
                ), key
            else:  # beta's lead was not selected: untouched
                assert d == delivery(found[key], "crm"), key


# --------------------------------------------------------------------------- 8: backfill


def test_backfill_fires_the_remembered_items_once(
    simulator: SimulatorThread, write_config: ConfigWriter, workdir: Path, cli_env: Env
) -> None:
    initial_leads = {lead["id"] for lead in simulator.sim.leads}
    assert len(initial_leads) == 3
    with Receiver() as crm:
        seed(simulator, write_config, workdir, cli_env, sink("crm", crm.url))

        def backfill(*args: str) -> str:
            return cli("backfill", "--trigger", "leads", *args, cwd=workdir, env=cli_env).stdout

        dry = backfill("--dry-run")
        assert dry.strip() == "acme/leads: would fire 3 remembered items"
        assert "acme/leads: fired 3 remembered items" in backfill()
        assert once(workdir, cli_env) == summary(3, 3, 0, 0)

        got = [verify(r) for r in crm.requests]
        assert {p["type"] for p in got} == {"lead.new"}
        assert {p["data"]["id"] for p in got} == initial_leads
        assert len(set(ids(crm.requests))) == 3

        assert "acme/leads: fired 0 remembered items" in backfill()
        assert once(workdir, cli_env) == summary(0, 0, 0, 0)
        assert len(crm.requests) == 3
        assert len(events_json(workdir, cli_env)) == 3
