"""The README's first command: the demo forwards new items with verified signatures."""

from __future__ import annotations

import re
from pathlib import Path

from tests.e2e.conftest import run_cli


def test_demo_forwards_leads_with_verified_signatures(tmp_path: Path) -> None:
    done = run_cli("demo", "--duration", "9", cwd=tmp_path, env={"TRIGGER_ENGINE_CONFIG": ""})
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "first poll: 5 existing items remembered" in out
    received = re.findall(r"recv  (\S+) .*\[signature verified\]", out)
    assert "lead.new" in received
    assert "BAD SIGNATURE" not in out
    # the console's address is printed (the demo opens nothing by itself)
    assert re.search(r"console: +http://127\.0\.0\.1:\d+/ \(token \S+, this run's only\)", out)
    match = re.search(r"stopped: (\d+) webhooks received, (\d+) with a verified signature", out)
    assert match is not None and match[1] == match[2] and int(match[1]) == len(received)
    assert not list(tmp_path.iterdir()), "the demo must leave nothing behind"
