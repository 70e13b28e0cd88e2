"""A sink removed from the configuration while deliveries to it wait (issue 13, item 6),
through the real CLI: ``status`` and ``sinks`` report it with what to run, ``events
--sink`` lists its deliveries, ``sinks drop`` moves them to another sink (same
``webhook-id``) or drops them, and its metric series disappear from a running daemon
once a reload removes it, so an alert on its age clears."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import httpx

from tests.e2e.conftest import ConfigWriter, run_cli, spawn_cli
from tests.receiver import Answer, Receiver
from tests.waiting import free_port, wait_until
from trigger_engine.sandbox import SimulatorThread

Env = dict[str, str]


def sink(name: str, url: str, extra: str = "") -> str:
    return f'[[sinks]]\nname = "{name}"\nurl = "{url}"\n{extra}\n'


# "old" answers 500 and retries only an hour later: its deliveries stay failed
OLD_RETRY = 'retry = { schedule = ["1h"] }'


def cli(workdir: Path, env: Env, *args: str, code: int = 0) -> str:
    done = run_cli(*args, cwd=workdir, env=env)
    assert done.returncode == code, (args, done.stdout, done.stderr)
    return done.stdout if code == 0 else done.stderr


def test_a_removed_sinks_backlog_is_listed_moved_to_another_sink_and_its_alert_clears(
    simulator: SimulatorThread, write_config: ConfigWriter, workdir: Path, cli_env: Env
) -> None:
    port = free_port()
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    with (
        Receiver() as crm,
        Receiver(lambda _r: Answer(status=500)) as old,
        Receiver() as backup,
    ):
        path = write_config(
            base_url=simulator.base_url,
            sinks=sink("crm", crm.url) + sink("old", old.url, OLD_RETRY),
            interval="300ms",
            engine_extra=f'listen = "127.0.0.1:{port}"',
        )
        cli(workdir, cli_env, "run", "--once")  # the first polls seed
        daemon = spawn_cli("run", cwd=workdir, env=cli_env)
        assert daemon.stderr is not None
        log_lines: list[str] = []
        reader = threading.Thread(target=lambda: log_lines.extend(iter(daemon.stderr.readline, "")))  # type: ignore[union-attr]
        reader.start()
        try:
            added = [simulator.sim.add_lead()["id"] for _ in range(3)]
            crm.wait_for(3)
            old.wait_for(3)
            # the documented alert's series, while the sink is configured
            page = wait_until(
                lambda: (
                    text
                    if 'trigger_engine_delivery_backlog{sink="old",status="failed"} 3.0'
                    in (text := httpx.get(metrics_url, timeout=5).text)
                    else None
                ),
                what="old's failed backlog in the metrics",
            )
            assert 'trigger_engine_oldest_pending_seconds{sink="old"}' in page

            # the sink is removed (and a new one added) by a reload
            path.write_text(
                path.read_text().replace(
                    sink("old", old.url, OLD_RETRY), sink("backup", backup.url)
                )
            )
            daemon.send_signal(signal.SIGHUP)
            wait_until(
                lambda: any("config.reloaded" in line for line in log_lines), what="the reload"
            )
            page = httpx.get(metrics_url, timeout=5).text
            # the backlog gauges of the removed sink are gone, so the alert on its age clears
            # (the counters of attempts made to it stay, as counters do, until a restart)
            assert 'oldest_pending_seconds{sink="old"}' not in page, page
            assert 'delivery_backlog{sink="old"' not in page, page
            assert 'trigger_engine_oldest_pending_seconds{sink="crm"} 0.0' in page

            # status and sinks report it, with its waiting count and what to run
            text = cli(workdir, cli_env, "status")
            assert (
                "  old: removed from the configuration, 3 deliveries waiting; pending 0, "
                "failed 3, dead 0, held 0, delivered 0; last success never"
            ) in text
            assert "trigger-engine sinks drop old --to OTHER" in text
            doc = json.loads(cli(workdir, cli_env, "status", "--json"))
            (row,) = [s for s in doc["sinks"] if s["name"] == "old"]
            assert (row["state"], row["waiting"], row["failed"], row["url"]) == (
                "removed",
                3,
                3,
                None,
            )
            assert "old  removed from the configuration, 3 deliveries waiting" in cli(
                workdir, cli_env, "sinks"
            )

            # its deliveries can be listed: events --sink takes the stored name
            listed = json.loads(cli(workdir, cli_env, "events", "--sink", "old", "--json"))
            assert sorted(e["key"] for e in listed) == sorted(added)
            assert {d["status"] for e in listed for d in e["deliveries"] if d["sink"] == "old"} == {
                "failed"
            }
            err = cli(workdir, cli_env, "events", "--sink", "olde", code=2)
            assert "no sink named 'olde'" in err and "did you mean 'old'?" in err
            # a replay takes the name too, and says where they can go
            out = cli(workdir, cli_env, "replay", "--since", "1d", "--sink", "old", "--dry-run")
            assert "would queue 0 deliveries (of 0 events)" in out
            assert "skipped 3 deliveries to sinks no longer configured" in out
            assert "sinks drop NAME --to OTHER" in out

            # refused: a configured sink, an unknown one, --to a sink not configured
            err = cli(workdir, cli_env, "sinks", "drop", "crm", code=2)
            assert err.count("\n") == 1 and "sink 'crm' is configured in" in err
            err = cli(workdir, cli_env, "sinks", "drop", "nope", code=2)
            assert "no sink named 'nope'" in err
            err = cli(workdir, cli_env, "sinks", "drop", "old", "--to", "old", code=2)
            assert "no sink named 'old' in" in err
            err = cli(workdir, cli_env, "sinks", "enable", "crm", "--dry-run", code=2)
            assert "--to and --dry-run go with 'sinks drop NAME'" in err

            # a dry run counts and changes nothing
            out = cli(workdir, cli_env, "sinks", "drop", "old", "--to", "backup", "--dry-run")
            assert out == (
                "would drop 3 deliveries (3 failed) of removed sink 'old'; would queue 3 to "
                "'backup'\n"
            )
            assert "3 deliveries waiting" in cli(workdir, cli_env, "status")

            # moved to backup while the daemon runs: it sends them, same webhook-ids
            done = run_cli("sinks", "drop", "old", "--to", "backup", cwd=workdir, env=cli_env)
            assert done.returncode == 0, done.stderr
            assert done.stdout == (
                "dropped 3 deliveries (3 failed) of removed sink 'old'; queued 3 to 'backup'\n"
            )
            assert "sink.dropped" in done.stderr and "sink=old" in done.stderr
            got = backup.wait_for(3)
            assert daemon.poll() is None
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)
            reader.join(10)
            assert daemon.stdout is not None
            daemon.stdout.close()
            daemon.stderr.close()
        assert daemon.returncode == 0, "".join(log_lines)

    assert sorted(r.json()["data"]["id"] for r in got) == sorted(added)  # type: ignore[index]
    # the same events: the webhook-ids old was sent are those backup received
    assert {r.headers["webhook-id"] for r in got} == {r.headers["webhook-id"] for r in old.requests}
    assert "removed" not in cli(workdir, cli_env, "status")
    # nothing of "old" is left: its name is unknown now
    err = cli(workdir, cli_env, "sinks", "drop", "old", code=2)
    assert "no sink named 'old'" in err


def test_a_removed_sinks_deliveries_dropped_for_good(
    simulator: SimulatorThread, write_config: ConfigWriter, workdir: Path, cli_env: Env
) -> None:
    with Receiver() as crm, Receiver(lambda _r: Answer(status=500)) as old:
        path = write_config(
            base_url=simulator.base_url,
            sinks=sink("crm", crm.url) + sink("old", old.url, OLD_RETRY),
        )
        cli(workdir, cli_env, "run", "--once")
        simulator.sim.add_lead()
        out = cli(workdir, cli_env, "run", "--once")
        assert "1 delivered, 1 to retry later" in out
        path.write_text(path.read_text().replace(sink("old", old.url, OLD_RETRY), ""))
        assert "1 delivery waiting" in cli(workdir, cli_env, "status")

        out = cli(workdir, cli_env, "sinks", "drop", "old", "--dry-run")
        assert out == "would drop 1 delivery (1 failed) of removed sink 'old'\n"
        out = cli(workdir, cli_env, "sinks", "drop", "old")
        assert out == "dropped 1 delivery (1 failed) of removed sink 'old'\n"
        assert "  old" not in cli(workdir, cli_env, "status")
        # its attempt history went with it; a second drop finds nothing of it
        assert "no sink named 'old'" in cli(workdir, cli_env, "sinks", "drop", "old", code=2)
        # the event and its delivery to crm are untouched
        (event,) = json.loads(cli(workdir, cli_env, "events", "--json"))
        assert [(d["sink"], d["status"]) for d in event["deliveries"]] == [("crm", "delivered")]
        assert len(old.requests) == 1
