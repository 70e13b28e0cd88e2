"""Events you can read and a CLI that behaves like one, through the real CLI (issue 14,
part D): ``events show`` (text and JSON, with every attempt and the start of each answer),
``events --search``, unknown event ids (exit 1), misspelt ``--type``/``--status``/``--sink``
(exit 2, "did you mean"), global options after the command name, a closed pipe (``| head``:
exit 0, quietly, 20 runs of 20), ``triggers retry`` (and the daemon's carried-over backoff at
start), ``run --once --strict``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import API_KEY, ConfigWriter, run_cli
from tests.e2e.test_crash_and_shutdown import Daemon, sink_toml, wait_until
from tests.e2e.test_operations import free_port
from tests.receiver import Answer, Receiver
from trigger_engine.clock import now as store_now
from trigger_engine.core.dedupe import key_items
from trigger_engine.db.store import Store
from trigger_engine.sandbox import SimulatorThread

Env = dict[str, str]


def answers(*plan: Answer) -> object:
    """A receiver plan: these answers in turn, then 200s."""
    queue = list(plan)
    return lambda _r: queue.pop(0) if queue else Answer()


def test_events_show_gives_the_payload_and_every_attempt_with_the_answer(
    simulator: SimulatorThread, write_config: ConfigWriter, workdir: Path, cli_env: Env
) -> None:
    plan = answers(Answer(status=500, body=b'{"error": "db down"}\n\x1b[2J'))
    with Receiver(plan) as receiver:  # type: ignore[arg-type]
        write_config(
            base_url=simulator.base_url,
            sinks=sink_toml(receiver.url, '[sinks.retry]\nschedule = ["0.2s"]\n'),
        )
        assert run_cli("run", "--once", cwd=workdir, env=cli_env).returncode == 0
        lead = simulator.sim.add_lead()
        strict = run_cli("run", "--once", "--strict", cwd=workdir, env=cli_env)
        assert strict.returncode == 1, strict.stderr  # the attempt failed (a 500)
        assert "--strict: 1 delivery attempt failed" in strict.stdout
        wait_until(
            lambda: run_cli("run", "--once", "--strict", cwd=workdir, env=cli_env).returncode == 0,
            20,
            "the retry to succeed",
        )
    (event,) = json.loads(run_cli("events", "--json", cwd=workdir, env=cli_env).stdout)

    text = run_cli("events", "show", event["id"], cwd=workdir, env=cli_env)
    assert text.returncode == 0, text.stderr
    print(text.stdout)
    assert f"event {event['id']}" in text.stdout
    assert f'"id": "{lead["id"]}"' in text.stdout  # the payload, as indented JSON
    assert "crm: delivered, 2 attempts" in text.stdout
    assert "status 500" in text.stdout and "HTTP 500 Internal Server Error" in text.stdout
    # the receiver's answer, its control characters escaped
    assert 'answer: {"error": "db down"}\\n\\x1b[2J' in text.stdout
    assert "\x1b" not in text.stdout

    shown = run_cli("events", "show", event["id"], "--json", cwd=workdir, env=cli_env)
    doc = json.loads(shown.stdout)
    assert doc["id"] == event["id"] and doc["payload"] == lead
    (delivery,) = doc["deliveries"]
    first, second = delivery["attempt_log"]
    assert (first["attempt"], first["status_code"], first["error"]) == (
        1,
        500,
        "HTTP 500 Internal Server Error",
    )
    assert first["response_body"] == '{"error": "db down"}\n\x1b[2J'
    assert isinstance(first["latency_ms"], int) and first["started_at"].endswith("Z")
    assert (second["status_code"], second["error"], second["response_body"]) == (200, None, "ok")

    # the search finds it by a piece of its payload, in any case
    name = lead["profile"]["name"] if "profile" in lead else None
    needle = (name or lead["id"]).upper()
    found = run_cli("events", "--search", needle, "--json", cwd=workdir, env=cli_env)
    assert [e["id"] for e in json.loads(found.stdout)] == [event["id"]]
    none = run_cli("events", "--search", needle, "--type", "campaign.new", cwd=workdir, env=cli_env)
    assert none.returncode == 0 and "no events match" in none.stdout
    with Store.open(f"sqlite:///{workdir / 'te.db'}") as store:  # run --once indexed it
        assert store.search_index.backlog() == 0


def test_a_failing_indexer_fails_neither_the_run_nor_the_search(
    simulator: SimulatorThread, write_config: ConfigWriter, workdir: Path, cli_env: Env
) -> None:
    """The database refuses the indexer's batch (here a trigger of ours): ``run --once``
    still polls, delivers and exits 0; it logs ``search.index_failed``; the event stays
    in the backlog, where the search finds it."""
    with Receiver() as receiver:
        write_config(base_url=simulator.base_url, sinks=sink_toml(receiver.url))
        assert run_cli("run", "--once", cwd=workdir, env=cli_env).returncode == 0
        with Store.open(f"sqlite:///{workdir / 'te.db'}") as store, store.db.tx() as conn:
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE DELETE ON events_search_backlog "
                "BEGIN SELECT RAISE(ABORT, 'no indexing today'); END"
            )
        lead = simulator.sim.add_lead()
        done = run_cli("run", "--once", "--strict", cwd=workdir, env=cli_env)
        assert done.returncode == 0, done.stderr
        assert "search.index_failed" in done.stderr and "no indexing today" in done.stderr
        assert "Traceback" not in done.stderr
        assert len(receiver.requests) == 1  # delivered all the same
    found = run_cli("events", "--search", lead["id"], "--json", cwd=workdir, env=cli_env)
    assert [e["key"] for e in json.loads(found.stdout)] == [lead["id"]]
    with Store.open(f"sqlite:///{workdir / 'te.db'}") as store:
        assert store.search_index.backlog() == 1


def test_the_daemon_indexes_what_was_written_in_the_background(
    write_config: ConfigWriter, workdir: Path, cli_env: Env
) -> None:
    """Events written outside the daemon's polls (as a first poll's 3 here) wait in the
    search's backlog; the serving daemon indexes them within seconds."""
    write_config(base_url="http://127.0.0.1:9", sinks=sink_toml("http://127.0.0.1:9/hook"))
    url = f"sqlite:///{workdir / 'te.db'}"
    with Store.open(url) as store:
        store.polls.record(
            "acme",
            "old_trigger",
            key_items([{"id": str(i), "name": f"Lead {i}"} for i in range(3)], ["id"]),
            event_type="lead.new",
            emit_first=True,
            sinks=[],
            now=store_now(),
        )
        assert store.search_index.backlog() == 3

    def indexed() -> bool:
        with Store.open(url, upgrade=False) as store:
            return store.search_index.backlog() == 0

    with Daemon(workdir, cli_env, "daemon") as daemon:
        daemon.wait_for_log("engine.started")
        wait_until(indexed, 20, "the indexer to empty the backlog")
        found = run_cli("events", "--search", "LEAD 1", "--json", cwd=workdir, env=cli_env)
        assert [e["key"] for e in json.loads(found.stdout)] == ["1"]
        daemon.send(__import__("signal").SIGTERM)
        assert daemon.wait(30) == 0


def test_unknown_event_ids_are_errors_naming_them(
    simulator: SimulatorThread, write_config: ConfigWriter, workdir: Path, cli_env: Env
) -> None:
    write_config(base_url=simulator.base_url, sinks=sink_toml("http://127.0.0.1:9/hook"))
    show = run_cli("events", "show", "evt_doesnotexist", cwd=workdir, env=cli_env)
    assert show.returncode == 1
    assert show.stderr.strip() == "trigger-engine: error: no event evt_doesnotexist"
    replay = run_cli(
        "replay", "--event", "evt_nope1", "--event", "evt_nope2", cwd=workdir, env=cli_env
    )
    assert replay.returncode == 1
    assert replay.stderr.strip() == "trigger-engine: error: no events evt_nope1, evt_nope2"
    assert "queued" not in replay.stdout


def test_misspelt_types_statuses_and_sinks_exit_2_with_a_did_you_mean(
    simulator: SimulatorThread, write_config: ConfigWriter, workdir: Path, cli_env: Env
) -> None:
    write_config(base_url=simulator.base_url, sinks=sink_toml("http://127.0.0.1:9/hook"))
    for args, hint in [
        (("events", "--type", "leads.new"), "did you mean 'lead.new'?"),
        (("events", "--type", "engine.tset"), "did you mean 'engine.test'?"),
        (("replay", "--since", "1h", "--type", "conection.new"), "did you mean 'connection.new'?"),
        (("events", "--status", "deliverd"), "did you mean 'delivered'?"),
        (("replay", "--since", "1h", "--status", "faild"), "did you mean 'failed'?"),
        (("events", "--sink", "crn"), "did you mean 'crm'?"),
        (("triggers", "pause", "acme", "lead"), "did you mean 'leads'?"),
    ]:
        done = run_cli(*args, cwd=workdir, env=cli_env)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        (line,) = done.stderr.strip().splitlines()
        assert hint in line, line
    # a type known only from the database (a removed trigger's) is accepted
    with Store.open(f"sqlite:///{workdir / 'te.db'}") as store:
        store.polls.record(
            "acme",
            "old_trigger",
            key_items([{"id": "1"}], ["id"]),
            event_type="old.thing",
            emit_first=True,
            sinks=["crm"],
            now=__import__("trigger_engine.clock", fromlist=["now"]).now(),
        )
    listed = run_cli("events", "--type", "old.thing", cwd=workdir, env=cli_env)
    assert listed.returncode == 0, listed.stderr
    assert "old.thing" in listed.stdout


def test_global_options_go_before_or_after_the_command_name(
    simulator: SimulatorThread, write_config: ConfigWriter, workdir: Path, cli_env: Env
) -> None:
    config = write_config(base_url=simulator.base_url, sinks=sink_toml("http://127.0.0.1:9/h"))
    elsewhere = workdir / "elsewhere"
    elsewhere.mkdir()
    for args in [
        ("status", "-c", str(config), "--debug"),
        ("--debug", "status", "--config", str(config)),
        ("-c", str(config), "status", "--debug"),
        ("--debug", "-c", str(config), "status"),
        ("events", "--limit", "5", "-c", str(config), "--debug"),
        ("db", "upgrade", "-c", str(config), "--debug"),
        ("db", "-c", str(config), "upgrade"),
        ("triggers", "--debug", "-c", str(config)),
    ]:
        done = run_cli(*args, cwd=elsewhere, env=cli_env)
        assert done.returncode == 0, (args, done.stderr)
    # --debug after the command name turns debug logs on
    debug = run_cli("run", "--once", "-c", str(config), "--debug", cwd=elsewhere, env=cli_env)
    assert debug.returncode == 0 and " DEBUG " in debug.stderr
    # the value after the command name wins
    wrong = run_cli("-c", "missing.toml", "status", "-c", str(config), cwd=elsewhere, env=cli_env)
    assert wrong.returncode == 0, wrong.stderr


def test_output_cut_short_by_head_ends_quietly_with_exit_0_in_20_runs_of_20(
    write_config: ConfigWriter, workdir: Path, cli_env: Env
) -> None:
    write_config(base_url="http://127.0.0.1:9", sinks=sink_toml("http://127.0.0.1:9/hook"))
    with Store.open(f"sqlite:///{workdir / 'te.db'}") as store:  # ~400 KB of event lines
        store.polls.record(
            "acme",
            "leads",
            key_items([{"id": f"lead-{i:05d}"} for i in range(3000)], ["id"]),
            event_type="lead.new",
            emit_first=True,
            sinks=["crm"],
            now=__import__("trigger_engine.clock", fromlist=["now"]).now(),
        )
    python = sys.executable
    results = []
    for run in range(20):
        command = ("events --limit 3000" if run % 2 == 0 else "status") + " | head -1"
        done = subprocess.run(
            ["bash", "-c", f"set -o pipefail; {python} -m trigger_engine {command}"],
            cwd=workdir,
            env={**__import__("os").environ, **cli_env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        results.append((done.returncode, done.stderr))
    ok = sum(1 for code, err in results if code == 0 and err == "")
    print(f"| head: exit 0 and nothing on stderr in {ok} of {len(results)} runs")
    assert ok == 20, [r for r in results if r != (0, "")][:3]


def test_triggers_retry_clears_a_carried_over_backoff_and_the_daemon_polls_at_once(
    simulator: SimulatorThread, write_config: ConfigWriter, workdir: Path, cli_env: Env
) -> None:
    # a first poll against a closed port fails: the trigger backs off for an interval (5 m)
    write_config(
        base_url=f"http://127.0.0.1:{free_port()}", sinks=sink_toml("http://127.0.0.1:9/h")
    )
    failed = run_cli("run", "--once", cwd=workdir, env=cli_env)
    assert failed.returncode == 1
    listing = run_cli("triggers", cwd=workdir, env=cli_env).stdout
    assert "acme/leads: backing off until" in listing

    # the base_url fixed, the daemon starts: it says the backoff was carried over
    write_config(base_url=simulator.base_url, sinks=sink_toml("http://127.0.0.1:9/h"))
    with Daemon(workdir, cli_env, "daemon") as daemon:
        daemon.wait_for_log("engine.started")
        for trigger in ("leads", "connections", "campaigns"):
            daemon.wait_for_log(f"poll.backoff_carried_over account=acme trigger={trigger}")
        assert "poll.first" not in daemon.stderr
        retry = run_cli("triggers", "retry", "acme", "leads", cwd=workdir, env=cli_env)
        assert retry.returncode == 0, retry.stderr
        assert "acme/leads: backoff cleared (it was backing off until" in retry.stdout
        assert "after 1 failed poll)" in retry.stdout
        # polled at the next heartbeat (10 s), not at the end of the backoff (5 minutes)
        daemon.wait_for_log("poll.retry_requested account=acme trigger=leads", timeout=20)
        daemon.wait_for_log("poll.first account=acme trigger=leads", timeout=20)
        assert "poll.first account=acme trigger=connections" not in daemon.stderr
        daemon.send(__import__("signal").SIGTERM)
        assert daemon.wait(30) == 0
    again = run_cli("triggers", "retry", "acme", "leads", cwd=workdir, env=cli_env)
    assert again.returncode == 0
    assert "acme/leads is not backing off" in again.stdout
    bad = run_cli("triggers", "retry", "acme", cwd=workdir, env=cli_env)
    assert bad.returncode == 2 and "needs ACCOUNT and TRIGGER" in bad.stderr


def test_run_strict_goes_with_once(workdir: Path, write_config: ConfigWriter, cli_env: Env) -> None:
    write_config(base_url="http://127.0.0.1:9", sinks=sink_toml("http://127.0.0.1:9/hook"))
    done = run_cli("run", "--strict", cwd=workdir, env=cli_env)
    assert done.returncode == 2
    assert "--strict goes with 'run --once'" in done.stderr


def test_the_api_key_never_shows(write_config: ConfigWriter, workdir: Path, cli_env: Env) -> None:
    """The new outputs stay free of secrets: the key is only in the environment."""
    write_config(base_url="http://127.0.0.1:9", sinks=sink_toml("http://127.0.0.1:9/hook"))
    for args in (("events", "--search", "x"), ("events", "show", "evt_x")):
        done = run_cli(*args, cwd=workdir, env=cli_env)
        assert API_KEY not in done.stdout + done.stderr
