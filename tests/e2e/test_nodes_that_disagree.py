"""Two PostgreSQL nodes whose configurations differ, through the real CLI (issue 13, item
5): node A serves crm; node B, as during a rolling deploy, serves crm and s2. A polls every
new lead (B has the trigger disabled: were both polling it, the nodes would divide it and
B might poll it all), yet each lead reaches both sinks exactly once,
under one ``webhook-id``, because A fans its events out to the sinks the live node B
serves; B alone sends s2's (A claims only for the sinks it knows: see
tests/integration/test_node_registry.py). ``status`` (with A's config) names B and what
differs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.conftest import run_cli
from tests.e2e.test_several_nodes import (
    Cluster,
    Db,
    Env,
    Node,
    add_leads,
    db,  # noqa: F401  (the fixture)
    lead_of,
    node_config,
    seed,
    status,
    wait_until,
)
from tests.receiver import Receiver
from trigger_engine.sandbox import SimulatorThread

pytestmark = pytest.mark.postgres


def test_two_nodes_with_different_sinks_deliver_every_event_to_every_sink(
    simulator: SimulatorThread,
    workdir: Path,
    cli_env: Env,
    pg_url: str,
    db: Db,  # noqa: F811
) -> None:
    with Receiver() as crm, Receiver() as s2:
        base = node_config(database=pg_url, base_url=simulator.base_url, sink_url=crm.url)
        path_a = workdir / "a.toml"
        path_b = workdir / "b.toml"
        path_a.write_text(base)
        only_a_polls = base.replace("[triggers.leads]\n", "[triggers.leads]\nenabled = false\n")
        assert only_a_polls != base
        path_b.write_text(only_a_polls + f'\n[[sinks]]\nname = "s2"\nurl = "{s2.url}"\n')
        env_a = {**cli_env, "TRIGGER_ENGINE_CONFIG": str(path_a)}
        env_b = {**cli_env, "TRIGGER_ENGINE_CONFIG": str(path_b)}
        seed(workdir, env_a)
        with Cluster(workdir, env_a) as cluster:
            (a,) = cluster.start(1)
            wait_until(lambda: db.poll_lease()[0] == a.name, 30, "A holding the leads trigger")
            b = Node(workdir, env_b, "node-b")
            cluster.nodes.append(b)
            # A learns at its next heartbeat (every 10 s) that B serves s2
            wait_until(
                lambda: "node.remote_sinks" in a.stderr and "sinks=s2" in a.stderr,
                30,
                "A reading B's sinks from the registry",
            )
            added = add_leads(simulator, 20)
            crm.wait_for(20, timeout=30)
            s2.wait_for(20, timeout=30)
            wait_until(db.all_delivered, 30, "every delivery delivered")
            owner, _expires, _token = db.poll_lease()
            assert owner == a.name  # A, without s2, polled them all

            # status, with A's configuration, names B and what differs
            nodes = {n["name"]: n for n in status(workdir, env_a)["nodes"]}
            assert (nodes[a.name]["config"], nodes[b.name]["config"]) == ("same", "differs")
            assert nodes[b.name]["config_differences"] == [
                "serves sink s2 that this configuration lacks"
            ]
            text = run_cli("status", cwd=workdir, env=env_a).stdout
            assert (
                f"node {b.name}'s configuration differs from this one: serves sink s2 that "
                "this configuration lacks"
            ) in text
            assert "  s2: not configured here, served by " + b.name in text
            codes = [a.stop(), b.stop()]
            logs = {n.label: n.stderr for n in (a, b)}
        requests = {"crm": list(crm.requests), "s2": list(s2.requests)}

    assert codes == [0, 0], logs
    for name, got in requests.items():
        assert Counter(lead_of(r) for r in got) == Counter(added), name
        assert len({r.headers["webhook-id"] for r in got}) == len(added), name
    assert {r.headers["webhook-id"] for r in requests["crm"]} == {
        r.headers["webhook-id"] for r in requests["s2"]
    }
    assert db.rows("SELECT status, count(*) FROM deliveries GROUP BY 1") == [("delivered", 40)]
