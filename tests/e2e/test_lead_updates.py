"""The opt-in lead_updates trigger through the real CLI and the simulator."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.conftest import ConfigWriter, run_cli
from tests.receiver import Receiver
from trigger_engine.sandbox import SimulatorThread


def test_changing_a_leads_status_upstream_fires_exactly_one_lead_updated(
    simulator: SimulatorThread, write_config: ConfigWriter, workdir: Path, cli_env: dict[str, str]
) -> None:
    with Receiver() as crm:
        write_config(
            base_url=simulator.base_url,
            sinks=f'[[sinks]]\nname = "crm"\nurl = "{crm.url}"\n',
            extra_triggers='[triggers.lead_updates]\ninterval = "5m"\n',
        )
        assert run_cli("run", "--once", cwd=workdir, env=cli_env).returncode == 0
        lead = simulator.sim.leads[1]
        simulator.sim.set_lead_field(lead["id"], "status", "meeting-booked")
        done = run_cli("run", "--once", cwd=workdir, env=cli_env)
        assert done.returncode == 0, done.stderr
        assert "acme/lead_updates: 3 items, 1 new" in done.stdout
        (update,) = [r.json() for r in crm.requests]
        assert update["type"] == "lead.updated"  # type: ignore[index]
        assert update["data"]["id"] == lead["id"]  # type: ignore[index]
        assert update["data"]["status"] == "meeting-booked"  # type: ignore[index]
        # nothing changed since: nothing more; a new lead is lead.new, not lead.updated
        new = simulator.sim.add_lead()
        again = run_cli("run", "--once", cwd=workdir, env=cli_env)
        assert again.returncode == 0, again.stderr
        types = [(r.json()["type"], r.json()["data"]["id"]) for r in crm.requests]  # type: ignore[index]
        assert types == [("lead.updated", lead["id"]), ("lead.new", new["id"])]
