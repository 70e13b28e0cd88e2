"""Safe first polls and a ``check`` that checks, through the real CLI against the
simulator and real local receivers (issue 14, part A).

- A wrong ``key`` (no item has it) fails the first ``run --once`` (exit 1, one sentence
  naming the field and the fields the items have) and seeds nothing, so once the key is
  fixed the first poll remembers the old leads and only a new lead ever fires.
- A changed ``key`` on a working trigger makes its next poll a first poll again: it
  remembers, fires nothing old, and logs ``poll.definition_changed``.
- ``check`` makes one request per (account, trigger), first page only, and sends each sink
  a signed ``engine.test`` event: it catches a 404 path, a keyless trigger and a dead sink
  (exit 1), and passes a good configuration (exit 0).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from tests.e2e.conftest import SECRET, run_cli
from tests.receiver import Receiver
from tests.waiting import free_port
from trigger_engine.sandbox import SimulatorThread

Env = dict[str, str]


def write(workdir: Path, base_url: str, *, leads: str = "", triggers: str = "", sinks: str = ""):  # type: ignore[no-untyped-def]
    (workdir / "trigger-engine.toml").write_text(
        f"""
[engine]
database = "sqlite:///te.db"

[source]
base_url = "{base_url}"
timeout = "5s"

[[accounts]]
name = "acme"
api_key = "${{ALFRED_API_KEY}}"

[triggers.leads]
interval = "5m"
{leads}
{triggers}
{sinks}
"""
    )


def sink(name: str, url: str, extra: str = "") -> str:
    return f'[[sinks]]\nname = "{name}"\nurl = "{url}"\n{extra}\n'


def lead_ids(receiver: Receiver) -> list[str]:
    return [r.json()["data"]["id"] for r in receiver.requests]  # type: ignore[index]


def test_a_wrong_key_seeds_nothing_and_fires_nothing_old_after_the_fix(
    simulator: SimulatorThread, workdir: Path, cli_env: Env
) -> None:
    simulator.sim.add_leads(24)  # 27 leads, as in the issue
    with Receiver() as crm:
        write(workdir, simulator.base_url, leads='key = "uuid"', sinks=sink("crm", crm.url))
        wrong = run_cli("run", "--once", cwd=workdir, env=cli_env)
        assert wrong.returncode == 1, wrong.stdout
        line = next(x for x in wrong.stdout.splitlines() if x.startswith("acme/leads:"))
        assert line.startswith(
            "acme/leads: failed: account 'acme', trigger 'leads': 27 of 27 items have no "
            "'uuid' (the key); their fields: campaign, "
        ), line
        assert ", id, " in line and "nothing was remembered or fired" in line
        status = json.loads(run_cli("status", "--json", cwd=workdir, env=cli_env).stdout)
        (leads,) = [t for t in status["triggers"] if t["trigger"] == "leads"]
        assert leads["last_outcome"] == "keyless" and "'uuid'" in leads["last_error"]
        assert leads["items_known"] == 0

        write(workdir, simulator.base_url, leads='key = "id"', sinks=sink("crm", crm.url))
        fixed = run_cli("run", "--once", cwd=workdir, env=cli_env)
        assert fixed.returncode == 0, fixed.stderr
        assert "acme/leads: 27 items, first poll, 27 remembered, 0 fired" in fixed.stdout
        new = simulator.sim.add_lead()
        later = run_cli("run", "--once", cwd=workdir, env=cli_env)
        assert later.returncode == 0, later.stderr
        assert "acme/leads: 28 items, 1 new" in later.stdout
        assert lead_ids(crm) == [new["id"]]  # nothing old, ever
    print(
        f"\nwrong key: {line[:120]}...\nafter the fix: {len(lead_ids(crm))} webhook: the new lead"
    )


def test_a_changed_key_re_seeds_and_fires_nothing_old(
    simulator: SimulatorThread, workdir: Path, cli_env: Env
) -> None:
    with Receiver() as crm:
        write(workdir, simulator.base_url, sinks=sink("crm", crm.url))
        assert run_cli("run", "--once", cwd=workdir, env=cli_env).returncode == 0
        first = simulator.sim.add_lead()
        assert (
            "acme/leads: 4 items, 1 new"
            in run_cli("run", "--once", cwd=workdir, env=cli_env).stdout
        )

        # every lead now has another key: without the fingerprint, all 5 would fire again
        write(
            workdir,
            simulator.base_url,
            leads='key = ["id", "campaign.key"]',
            sinks=sink("crm", crm.url),
        )
        simulator.sim.add_lead()  # arrives with the change: remembered, not fired
        again = run_cli("run", "--once", cwd=workdir, env=cli_env)
        assert again.returncode == 0, again.stderr
        assert (
            "acme/leads: 5 items, first poll again (its definition changed), 5 remembered, "
            "0 fired" in again.stdout
        )
        assert "poll.definition_changed" in again.stderr and "changed=key" in again.stderr
        newest = simulator.sim.add_lead()
        later = run_cli("run", "--once", cwd=workdir, env=cli_env)
        assert "acme/leads: 6 items, 1 new" in later.stdout
        assert "poll.definition_changed" not in later.stderr
        assert lead_ids(crm) == [first["id"], newest["id"]]


GOOD_TRIGGERS = """
[triggers.connections]
interval = "5m"

[triggers.campaigns]
interval = "5m"
"""


def test_check_passes_a_good_config_and_signs_its_test_event(
    simulator: SimulatorThread, workdir: Path, cli_env: Env
) -> None:
    with Receiver() as crm:
        write(
            workdir,
            simulator.base_url,
            triggers=GOOD_TRIGGERS,
            sinks=sink("crm", crm.url, f'secret = "{SECRET}"\nheaders = {{ X-Token = "t-1" }}'),
        )
        done = run_cli("check", cwd=workdir, env=cli_env)
        assert done.returncode == 0, done.stdout + done.stderr
        lines = done.stdout.splitlines()
        assert any(
            x.startswith("acme/leads: ok: 3 items on the first page, 0 without the key 'id'")
            for x in lines
        ), lines
        assert any(x.startswith("acme/connections: ok: 3 items") for x in lines), lines
        assert any(x.startswith("acme/campaigns: ok: 3 items") for x in lines), lines
        assert "account 'acme': ok" in lines
        assert any(x.startswith("sink 'crm': ok: HTTP 200 in ") for x in lines), lines
        assert lines[-1] == "all 4 checks passed"
        (test,) = crm.requests
        payload = Webhook(SECRET).verify(test.body, test.headers)  # a valid signature
        assert payload["type"] == "engine.test" and payload["account"] is None
        assert payload["data"]["sent_by"] == "trigger-engine check"
        assert set(payload) == {"type", "timestamp", "account", "data"}
        assert test.headers["webhook-id"].startswith("evt_")
        assert test.headers["webhook-id"] in done.stdout
        assert test.headers["user-agent"].startswith("trigger-engine/")
        assert test.headers["x-token"] == "t-1"
        assert not (workdir / "te.db").exists()  # check stores nothing
    print("\n" + done.stdout)


def test_check_catches_a_404_path_a_keyless_trigger_and_a_dead_sink(
    simulator: SimulatorThread, workdir: Path, cli_env: Env
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/hook"
    custom = """
[triggers.replies]
path = "/replies"
key = "id"
event = "reply.new"
interval = "5m"
"""
    with Receiver() as crm:
        write(
            workdir,
            simulator.base_url,
            leads='key = "uuid"',
            triggers=custom + GOOD_TRIGGERS,
            sinks=sink("crm", crm.url) + sink("gone", dead),
        )
        done = run_cli("check", cwd=workdir, env=cli_env)
        assert done.returncode == 1, done.stdout
        out = done.stdout
        assert (
            "acme/leads: failed: account 'acme', trigger 'leads': 3 of 3 items have no 'uuid' "
            "(the key); their fields: " in out
        )
        assert "acme/replies: failed: account 'acme', trigger 'replies': GET " in out
        assert "/replies?api_key=***: HTTP 404 Not Found" in out
        assert "acme/campaigns: ok: 3 items" in out
        assert "account 'acme': failed (2 of 4 triggers)" in out
        assert "sink 'crm': ok: HTTP 200" in out
        assert "sink 'gone': failed: connection refused by 127.0.0.1:" in out
        assert out.splitlines()[-1] == "3 of 6 checks failed"
        assert len(crm.requests) == 1
        assert cli_env["ALFRED_API_KEY"] not in out + done.stderr

        as_json = run_cli("check", "--json", cwd=workdir, env=cli_env)
    assert as_json.returncode == 1
    doc = json.loads(as_json.stdout)
    assert set(doc) == {"config", "triggers", "sinks", "ok"} and doc["ok"] is False
    assert doc["config"]["path"] == str(workdir / "trigger-engine.toml")
    by_trigger = {t["trigger"]: t for t in doc["triggers"]}
    assert set(by_trigger) == {"leads", "replies", "connections", "campaigns"}
    for t in doc["triggers"]:
        assert {
            "account",
            "trigger",
            "ok",
            "items",
            "keyless",
            "fields",
            "error",
            "duration_ms",
        } <= set(t)
    leads = by_trigger["leads"]
    assert (leads["ok"], leads["items"], leads["keyless"], leads["kind"]) == (
        False,
        3,
        3,
        "keyless",
    )
    assert "id" in leads["fields"] and leads["fields"] == sorted(leads["fields"])
    replies = by_trigger["replies"]
    assert (replies["ok"], replies["items"], replies["kind"]) == (False, None, "client")
    assert "HTTP 404" in replies["error"]
    assert (by_trigger["campaigns"]["ok"], by_trigger["campaigns"]["error"]) == (True, None)
    sinks = {s["sink"]: s for s in doc["sinks"]}
    for s in doc["sinks"]:
        assert {"sink", "ok", "status_code", "latency_ms", "error"} <= set(s)
    assert (sinks["crm"]["ok"], sinks["crm"]["status_code"], sinks["crm"]["error"]) == (
        True,
        200,
        None,
    )
    assert (sinks["gone"]["ok"], sinks["gone"]["status_code"]) == (False, None)
    assert "connection refused by 127.0.0.1:" in sinks["gone"]["error"]
    print("\n" + done.stdout)


def test_check_no_sinks_sends_nothing_and_a_failing_sink_fails_alone(
    simulator: SimulatorThread, workdir: Path, cli_env: Env
) -> None:
    from tests.receiver import Answer

    with Receiver() as crm, Receiver(lambda _r: Answer(status=500)) as broken:
        write(workdir, simulator.base_url, sinks=sink("crm", crm.url) + sink("broken", broken.url))
        quiet = run_cli("check", "--no-sinks", "--json", cwd=workdir, env=cli_env)
        assert quiet.returncode == 0, quiet.stdout
        doc: Any = json.loads(quiet.stdout)
        assert (doc["ok"], doc["sinks"], doc["config"]["sinks_checked"]) == (True, [], False)
        assert crm.requests == [] and broken.requests == []
        text = run_cli("check", "--no-sinks", cwd=workdir, env=cli_env)
        assert "sinks: not checked (--no-sinks)" in text.stdout and text.returncode == 0

        loud = run_cli("check", cwd=workdir, env=cli_env)
        assert loud.returncode == 1
        assert "sink 'broken': failed: HTTP 500 Internal Server Error after " in loud.stdout
        assert "sink 'crm': ok: HTTP 200" in loud.stdout
        assert (len(crm.requests), len(broken.requests)) == (1, 1)  # one try, no retries


def test_check_requests_only_the_first_page_of_a_paginated_trigger(
    simulator: SimulatorThread, workdir: Path, cli_env: Env
) -> None:
    simulator.sim.add_leads(7)  # 10 leads: 5 pages of 2
    write(workdir, simulator.base_url, leads="pagination = { per_page = 2 }")
    done = run_cli("check", "--json", "--no-sinks", cwd=workdir, env=cli_env)
    assert done.returncode == 0, done.stdout
    (leads,) = json.loads(done.stdout)["triggers"]
    assert (leads["ok"], leads["items"], leads["keyless"]) == (True, 2, 0)


@pytest.mark.parametrize("flag", ["--no-sinks", "--json"])
def test_check_with_a_bad_config_is_exit_2(flag: str, workdir: Path, cli_env: Env) -> None:
    (workdir / "trigger-engine.toml").write_text("[engine]\nfrobnicate = 1\n")
    done = run_cli("check", flag, cwd=workdir, env=cli_env)
    assert done.returncode == 2 and "frobnicate" in done.stderr and done.stdout == ""
