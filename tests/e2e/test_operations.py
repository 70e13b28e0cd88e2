"""Day two: /healthz and /metrics on a running daemon, and a config reload on SIGHUP."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import httpx

from tests.e2e.conftest import ConfigWriter, run_cli, spawn_cli
from tests.receiver import Receiver
from tests.waiting import free_port, wait_until
from trigger_engine.sandbox import SimulatorThread


def metric(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric line starting with {line_start!r}")


def test_healthz_and_metrics_on_a_running_daemon(
    simulator: SimulatorThread, write_config: ConfigWriter, workdir: Path, cli_env: dict[str, str]
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with Receiver() as crm:
        write_config(
            base_url=simulator.base_url,
            sinks=f'[[sinks]]\nname = "crm"\nurl = "{crm.url}"\n',
            interval="300ms",
            engine_extra=f'listen = "127.0.0.1:{port}"',
        )
        daemon = spawn_cli("run", cwd=workdir, env=cli_env)
        try:
            health = wait_until(lambda: httpx.get(f"{base}/healthz", timeout=2))
            assert health.status_code == 200
            assert health.json() == {"status": "ok", "live": True, "ready": True, "reasons": []}
            assert httpx.get(f"{base}/livez", timeout=2).status_code == 200
            # first polls done (each trigger polled once at least), then two new leads
            wait_until(
                lambda: (
                    'outcome="ok"' in httpx.get(f"{base}/metrics").text
                    and 'trigger="campaigns"' in httpx.get(f"{base}/metrics").text
                )
            )
            simulator.sim.add_lead()
            simulator.sim.add_lead()
            crm.wait_for(2)
            delivered = 'trigger_engine_deliveries_total{outcome="delivered",sink="crm"} 2.0'

            def scrape_when_delivered() -> str | None:
                text = httpx.get(f"{base}/metrics").text
                return text if delivered in text else None

            page = wait_until(scrape_when_delivered)
            assert "# HELP trigger_engine_polls_total" in page
            assert metric(page, 'trigger_engine_events_total{account="acme",type="lead.new"}') == 2
            assert (
                metric(
                    page, 'trigger_engine_polls_total{account="acme",outcome="ok",trigger="leads"}'
                )
                >= 2
            )
            assert metric(page, 'trigger_engine_delivery_backlog{sink="crm",status="pending"}') == 0
            assert metric(page, 'trigger_engine_oldest_pending_seconds{sink="crm"}') == 0
            assert "trigger_engine_poll_duration_seconds_bucket" in page
            assert "trigger_engine_delivery_latency_seconds_count" in page
            assert "trigger_engine_items_seen_total" in page
        finally:
            daemon.send_signal(signal.SIGTERM)
            _out, err = daemon.communicate(timeout=30)
        assert daemon.returncode == 0, err


def test_sighup_reloads_the_config_and_a_new_sink_receives_new_events(
    simulator: SimulatorThread, write_config: ConfigWriter, workdir: Path, cli_env: dict[str, str]
) -> None:
    with Receiver() as crm, Receiver() as ops:
        first_sinks = f'[[sinks]]\nname = "crm"\nurl = "{crm.url}"\n'
        path = write_config(base_url=simulator.base_url, sinks=first_sinks, interval="300ms")
        assert run_cli("run", "--once", cwd=workdir, env=cli_env).returncode == 0
        daemon = spawn_cli("run", cwd=workdir, env=cli_env)
        assert daemon.stderr is not None
        log_lines: list[str] = []
        reader = threading.Thread(target=lambda: log_lines.extend(iter(daemon.stderr.readline, "")))  # type: ignore[union-attr]
        reader.start()
        try:
            before = simulator.sim.add_lead()
            crm.wait_for(1)
            # a broken file is refused and the daemon keeps its running config
            path.write_text(path.read_text() + "\n[oops\n")
            daemon.send_signal(signal.SIGHUP)
            wait_until(lambda: any("config.reload_failed" in line for line in log_lines))
            path.write_text(
                path.read_text().replace("\n[oops\n", "")
                + f'\n[[sinks]]\nname = "ops"\nurl = "{ops.url}"\n'
            )
            daemon.send_signal(signal.SIGHUP)
            wait_until(lambda: any("config.reloaded" in line for line in log_lines))
            after = simulator.sim.add_lead()
            got = ops.wait_for(1)
            assert [r.json()["data"]["id"] for r in got] == [after["id"]]  # type: ignore[index]
            crm.wait_for(2)
            assert daemon.poll() is None  # still running
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)
            reader.join(10)
            assert daemon.stdout is not None
            daemon.stdout.close()
            daemon.stderr.close()
        assert daemon.returncode == 0, "".join(log_lines)
        failed = next(line for line in log_lines if "config.reload_failed" in line)
        assert "invalid TOML" in failed and "keeping" in failed
        ids = [r.json()["data"]["id"] for r in crm.requests]  # type: ignore[index]
        assert ids == [before["id"], after["id"]]  # no duplicate, nothing lost
