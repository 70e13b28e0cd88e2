"""The whole pipeline through the real CLI: simulator → engine → signed webhooks."""

from __future__ import annotations

import signal
from pathlib import Path

import orjson
from standardwebhooks.webhooks import Webhook

from tests.e2e.conftest import API_KEY, SECRET, ConfigWriter, run_cli, spawn_cli
from tests.receiver import Received, Receiver
from trigger_engine.sandbox import SimulatorThread


def sinks_toml(crm_url: str, leads_url: str) -> str:
    return f"""
[[sinks]]
name = "crm"
url = "{crm_url}"
secret = "{SECRET}"
headers = {{ Authorization = "Bearer ${{CRM_TOKEN}}" }}
max_in_flight = 1

[[sinks]]
name = "leads-only"
url = "{leads_url}"
events = ["lead.new"]
format = "raw"
"""


def verify(request: Received) -> dict[str, object]:
    payload = Webhook(SECRET).verify(request.body, request.headers)
    assert isinstance(payload, dict)
    return payload


def test_first_poll_seeds_then_each_new_item_fires_exactly_once(
    simulator: SimulatorThread, write_config: ConfigWriter, workdir: Path, cli_env: dict[str, str]
) -> None:
    env = {**cli_env, "CRM_TOKEN": "tok-9d1e"}
    with Receiver() as crm, Receiver() as leads_only:
        write_config(base_url=simulator.base_url, sinks=sinks_toml(crm.url, leads_only.url))

        first = run_cli("run", "--once", cwd=workdir, env=env)
        assert first.returncode == 0, first.stderr
        assert "acme/leads: 3 items, first poll, 3 remembered, 0 fired" in first.stdout
        assert crm.requests == [] and leads_only.requests == []

        sim = simulator.sim
        new_leads = [sim.add_lead(), sim.add_lead()]
        new_connection = sim.add_connection()
        new_campaign = sim.add_campaign()

        second = run_cli("run", "--once", cwd=workdir, env=env)
        assert second.returncode == 0, second.stderr
        assert "deliveries: 6 attempted, 6 delivered" in second.stdout

        got = [verify(r) for r in crm.requests]
        assert sorted(p["type"] for p in got) == [  # type: ignore[type-var]
            "campaign.new",
            "connection.new",
            "lead.new",
            "lead.new",
        ]
        by_type = {(p["type"], orjson.dumps(p["data"])) for p in got}
        assert ("lead.new", orjson.dumps(new_leads[0])) in by_type
        assert ("lead.new", orjson.dumps(new_leads[1])) in by_type
        assert ("connection.new", orjson.dumps(new_connection)) in by_type
        assert ("campaign.new", orjson.dumps(new_campaign)) in by_type
        assert all(p["account"] == "acme" for p in got)
        # with max_in_flight = 1, the older of the two new leads went out first
        lead_ids = [p["data"]["id"] for p in got if p["type"] == "lead.new"]  # type: ignore[index]
        assert lead_ids == [new_leads[0]["id"], new_leads[1]["id"]]

        for r in crm.requests:
            assert r.headers["content-type"] == "application/json"
            assert r.headers["user-agent"].startswith("trigger-engine/")
            assert r.headers["authorization"] == "Bearer tok-9d1e"
            assert r.headers["webhook-id"].startswith("evt_")
        assert len({r.headers["webhook-id"] for r in crm.requests}) == 4

        # the raw, lead-only sink: the item alone, unsigned, only leads
        raw = [r.json() for r in leads_only.requests]
        assert sorted(x["id"] for x in raw) == sorted(x["id"] for x in new_leads)  # type: ignore[index]
        assert all("webhook-signature" not in r.headers for r in leads_only.requests)
        crm_ids = {r.headers["webhook-id"] for r in crm.requests}
        assert {r.headers["webhook-id"] for r in leads_only.requests} <= crm_ids

        third = run_cli("run", "--once", cwd=workdir, env=env)
        assert third.returncode == 0, third.stderr
        assert "deliveries: 0 attempted" in third.stdout
        assert len(crm.requests) == 4 and len(leads_only.requests) == 2

    everything = first.stdout + first.stderr + second.stdout + second.stderr
    assert API_KEY not in everything and "tok-9d1e" not in everything
    assert API_KEY not in (workdir / "te.db").read_bytes().decode("latin-1")


def test_emit_on_first_poll_fires_what_exists(
    simulator: SimulatorThread, write_config: ConfigWriter, workdir: Path, cli_env: dict[str, str]
) -> None:
    with Receiver() as crm:
        path = write_config(
            base_url=simulator.base_url,
            sinks=f'[[sinks]]\nname = "crm"\nurl = "{crm.url}"\nevents = ["lead.new"]\n',
        )
        path.write_text(
            path.read_text().replace(
                '[triggers.leads]\ninterval = "5m"',
                '[triggers.leads]\ninterval = "5m"\non_first_poll = "emit"',
            )
        )
        done = run_cli("run", "--once", cwd=workdir, env=cli_env)
        assert done.returncode == 0, done.stderr
        assert sorted(r.json()["data"]["id"] for r in crm.requests) == sorted(  # type: ignore[index]
            lead["id"] for lead in simulator.sim.leads
        )


def test_a_failed_delivery_is_retried_with_the_same_webhook_id(
    simulator: SimulatorThread, write_config: ConfigWriter, workdir: Path, cli_env: dict[str, str]
) -> None:
    answers = iter([500, 503])

    def plan(_r: Received):  # type: ignore[no-untyped-def]
        from tests.receiver import Answer

        return Answer(status=next(answers, 200))

    with Receiver(plan) as crm:
        write_config(
            base_url=simulator.base_url,
            sinks=f'[[sinks]]\nname = "crm"\nurl = "{crm.url}"\nsecret = "{SECRET}"\n'
            '[sinks.retry]\nschedule = ["10ms", "10ms", "10ms"]\n',
        )
        assert run_cli("run", "--once", cwd=workdir, env=cli_env).returncode == 0
        simulator.sim.add_lead()
        # run --once delivers what is due now; each retry falls due 10 ms later, so each
        # run makes one attempt: 500, then 503, then 200
        outputs = [run_cli("run", "--once", cwd=workdir, env=cli_env) for _ in range(4)]
        assert [o.returncode for o in outputs] == [0, 0, 0, 0], outputs[0].stderr
        assert "1 attempted, 0 delivered, 1 to retry later" in outputs[0].stdout
        assert "1 attempted, 0 delivered, 1 to retry later" in outputs[1].stdout
        assert "1 attempted, 1 delivered" in outputs[2].stdout
        assert "0 attempted" in outputs[3].stdout
        assert len(crm.requests) == 3
        assert len({r.headers["webhook-id"] for r in crm.requests}) == 1
        for r in crm.requests:
            verify(r)


def test_the_daemon_forwards_new_items_and_stops_cleanly_on_sigterm(
    simulator: SimulatorThread, write_config: ConfigWriter, workdir: Path, cli_env: dict[str, str]
) -> None:
    with Receiver() as crm:
        write_config(
            base_url=simulator.base_url,
            sinks=f'[[sinks]]\nname = "crm"\nurl = "{crm.url}"\nsecret = "{SECRET}"\n',
            interval="200ms",
        )
        # the first polls remember what exists; the daemon then fires what is new
        assert run_cli("run", "--once", cwd=workdir, env=cli_env).returncode == 0
        daemon = spawn_cli("run", cwd=workdir, env=cli_env)
        try:
            lead = simulator.sim.add_lead()
            connection = simulator.sim.add_connection()
            got = crm.wait_for(2, timeout=30)
            assert {orjson.loads(r.body)["data"]["id"] for r in got} == {
                lead["id"],
                connection["id"],
            }
        finally:
            daemon.send_signal(signal.SIGTERM)
            out, err = daemon.communicate(timeout=30)
        assert daemon.returncode == 0, err
        assert "engine.stopped" in err
        assert API_KEY not in out + err
        for r in crm.requests:
            verify(r)
        assert len({r.headers["webhook-id"] for r in crm.requests}) == len(crm.requests)
