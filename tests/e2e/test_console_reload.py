"""A reload (SIGHUP) of the real daemon that adds ``[console]``, changes its token or
removes it takes effect at once: no restart."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.e2e.conftest import ConfigWriter, spawn_cli
from tests.e2e.test_console_browser import free_port
from trigger_engine.sandbox import SimulatorThread

WAIT = 30.0


def test_a_reload_turns_the_console_on_changes_its_token_and_turns_it_off(
    simulator: SimulatorThread,
    write_config: ConfigWriter,
    workdir: Path,
    cli_env: dict[str, str],
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    def write(console: str) -> None:
        write_config(
            base_url=simulator.base_url,
            sinks='[[sinks]]\nname = "crm"\nurl = "http://127.0.0.1:9/hook"\n',
            engine_extra=f'listen = "127.0.0.1:{port}"\n\n{console}',
        )

    def status(token: str) -> int:
        try:
            headers = {"Authorization": f"Bearer {token}"}
            return httpx.get(f"{base}/api/v1/status", headers=headers, timeout=2).status_code
        except httpx.TransportError:
            return 0

    def until(what: str, check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + WAIT
        while not check():
            assert daemon.poll() is None, daemon.communicate()[1]
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)

    write("")
    daemon: subprocess.Popen[str] = spawn_cli("run", cwd=workdir, env=cli_env)
    try:
        until("the daemon to serve", lambda: status("first-token-123") == 404)
        write('[console]\ntoken = "first-token-123"\n')
        daemon.send_signal(signal.SIGHUP)
        until("the console on", lambda: status("first-token-123") == 200)
        write('[console]\ntoken = "second-token-456"\n')
        daemon.send_signal(signal.SIGHUP)
        until("the new token", lambda: status("second-token-456") == 200)
        assert status("first-token-123") == 401
        write("")
        daemon.send_signal(signal.SIGHUP)
        until("the console off", lambda: status("second-token-456") == 404)
        assert httpx.get(f"{base}/metrics", timeout=2).status_code == 200
    finally:
        daemon.send_signal(signal.SIGTERM)
        _out, err = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, err
    assert "second-token-456" not in err and "first-token-123" not in err
