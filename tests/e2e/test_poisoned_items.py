"""One poisoned item beside good ones, through the real CLI on SQLite and PostgreSQL: the
good ones are forwarded, the poisoned one is quarantined and visible (status, events
--status quarantined, one log line), tried again at every poll, and forwarded exactly once
when it can be (issue 12)."""

from __future__ import annotations

from pathlib import Path

import orjson
from sqlalchemy import create_engine

from tests.e2e.conftest import ConfigWriter, run_cli
from tests.receiver import Receiver
from trigger_engine.sandbox import Fault, SimulatorThread


def set_poison(db_url: str, *, on: bool) -> None:
    """A database trigger that refuses the event of the item keyed "poison"."""
    engine = create_engine(db_url)
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql(
                "CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.item_key = 'poison' "
                "BEGIN SELECT RAISE(ABORT, 'poisoned item'); END"
                if on
                else "DROP TRIGGER poison"
            )
        elif on:
            conn.exec_driver_sql(
                "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.item_key = 'poison' THEN RAISE EXCEPTION 'poisoned item' "
                "USING ERRCODE = 'check_violation'; END IF; RETURN NEW; END $$"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER poison BEFORE INSERT ON events "
                "FOR EACH ROW EXECUTE FUNCTION poison()"
            )
        else:
            conn.exec_driver_sql("DROP TRIGGER poison ON events")
    engine.dispose()


def leads_trigger(status_doc: dict[str, object]) -> dict[str, object]:
    triggers = status_doc["triggers"]
    assert isinstance(triggers, list)
    (row,) = [t for t in triggers if t["trigger"] == "leads"]
    return row  # type: ignore[no-any-return]


def test_a_poisoned_item_is_quarantined_and_the_others_still_fire(
    simulator: SimulatorThread,
    write_config: ConfigWriter,
    workdir: Path,
    cli_env: dict[str, str],
    db_url: str,
) -> None:
    with Receiver() as crm:
        write_config(
            base_url=simulator.base_url,
            database=db_url,
            sinks=f'[[sinks]]\nname = "crm"\nurl = "{crm.url}"\nformat = "raw"\n',
        )
        seed = run_cli("run", "--once", cwd=workdir, env=cli_env)
        assert seed.returncode == 0, seed.stderr
        set_poison(db_url, on=True)
        # the leads endpoint now lists, newest first: a good lead, the poison, ids that no
        # database stores as they are (NUL, 3,000 characters), and another good lead
        items = [
            {"id": "good-2", "person": {"name": "Ada"}},
            {"id": "poison", "person": {"name": "Mallory"}},
            {"id": "nul\u0000id", "person": {"name": "Nul"}},
            {"id": "L" * 3000, "person": {"name": "Long"}},
            {"id": "good-1", "person": {"name": "Bob"}},
        ]
        body = orjson.dumps(items)
        simulator.sim.inject(Fault(status=200, body=body, count=3, paths=("/leads",)))

        first = run_cli("run", "--once", cwd=workdir, env=cli_env)
        assert first.returncode == 0, first.stderr
        forwarded = [orjson.loads(r.body)["id"] for r in crm.requests]
        assert sorted(forwarded) == sorted(["good-1", "nul\u0000id", "L" * 3000, "good-2"])
        assert "acme/leads: 5 items, 4 new, 1 quarantined" in first.stdout
        assert first.stderr.count("item.quarantined") == 1
        assert "key=poison" in first.stderr and "poisoned item" in first.stderr

        status = run_cli("status", "--json", cwd=workdir, env=cli_env)
        assert status.returncode == 0, status.stderr
        row = leads_trigger(orjson.loads(status.stdout))
        assert (row["quarantined"], row["last_outcome"]) == (1, "ok")
        assert "1 quarantined" in run_cli("status", cwd=workdir, env=cli_env).stdout

        listed = run_cli("events", "--status", "quarantined", "--json", cwd=workdir, env=cli_env)
        assert listed.returncode == 0, listed.stderr
        (entry,) = orjson.loads(listed.stdout)
        assert (entry["key"], entry["status"], entry["type"]) == (
            "poison",
            "quarantined",
            "lead.new",
        )
        assert "poisoned item" in entry["reason"]
        text = run_cli("events", "--status", "quarantined", cwd=workdir, env=cli_env).stdout
        assert "quarantined" in text and "key=poison" in text

        # tried again at the next poll: still refused, no new log line, nothing sent twice
        second = run_cli("run", "--once", cwd=workdir, env=cli_env)
        assert second.returncode == 0, second.stderr
        assert "item.quarantined" not in second.stderr
        assert len(crm.requests) == 4

        # once the item can be stored, it is forwarded exactly once
        set_poison(db_url, on=False)
        third = run_cli("run", "--once", cwd=workdir, env=cli_env)
        assert third.returncode == 0, third.stderr
        assert [orjson.loads(r.body)["id"] for r in crm.requests[4:]] == ["poison"]
        after = orjson.loads(run_cli("status", "--json", cwd=workdir, env=cli_env).stdout)
        assert leads_trigger(after)["quarantined"] == 0
        fourth = run_cli("run", "--once", cwd=workdir, env=cli_env)
        assert fourth.returncode == 0, fourth.stderr
        assert len(crm.requests) == 5


def test_replay_of_quarantined_items_is_refused_with_a_sentence(
    simulator: SimulatorThread, write_config: ConfigWriter, workdir: Path, cli_env: dict[str, str]
) -> None:
    write_config(base_url=simulator.base_url, sinks="")
    done = run_cli("replay", "--since", "1h", "--status", "quarantined", cwd=workdir, env=cli_env)
    assert done.returncode == 2
    assert "quarantined items have no deliveries to replay" in done.stderr
    assert "Traceback" not in done.stderr
