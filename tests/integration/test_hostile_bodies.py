"""Bodies built to cost: a poll of each, in a process of its own, over a real local HTTP
server and the source's real transport, refused with its peak memory bounded.

The child measures its own peak RSS (``VmHWM`` in /proc/self/status: ``ru_maxrss`` would
not do, Linux carries it over ``execve`` from the parent, pytest) after the imports and
after the poll, and runs under an address-space limit (2 GiB above what it has mapped
after the imports), so an engine that tried to parse such a body fails with MemoryError
instead of taking the machine's memory. The figures are printed (``pytest -s``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

MIB = 1024 * 1024

CHILD = r"""
import json, resource, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from trigger_engine.config import config_from_dict
from trigger_engine.errors import SourceError
from trigger_engine.polling.source import Source

body = open(sys.argv[1], "rb").read()
encoding = sys.argv[2]


def peak_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-type", "application/json")
        if encoding:
            self.send_header("content-encoding", encoding)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass  # the engine stopped reading: what a refusal looks like

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
cfg = config_from_dict(
    {
        "accounts": [{"name": "acme", "api_key": "k"}],
        "triggers": {"leads": {}},
        "source": {"base_url": f"http://127.0.0.1:{server.server_port}", "timeout": 60},
    }
)
mapped = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (mapped + 2048 * 1024 * 1024, resource.RLIM_INFINITY))
before = peak_kib()
with Source(cfg.source) as source:
    try:
        items = source.fetch(cfg.accounts[0], cfg.triggers["leads"])
        outcome = f"parsed {len(items)} items"
    except SourceError as exc:
        outcome = f"{exc.kind}: {exc}"
    except MemoryError:
        outcome = "MemoryError"
peak = peak_kib()
print(json.dumps({"before_kib": before, "peak_kib": peak, "outcome": outcome}))
server.shutdown()
"""


def poll_in_a_child(body: Path, encoding: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(body), encoding],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    grew = (report["peak_kib"] - report["before_kib"]) / 1024
    print(f"\n{body.name}: peak RSS {report['peak_kib'] / 1024:.0f} MiB, +{grew:.0f} MiB")
    return report


def write_gzip_bomb(path: Path, decoded: int) -> int:
    """gzip of ``[{},{},...]`` decoding to ``decoded`` bytes, written without holding them."""
    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    unit = b"{}," * (MIB // 3)
    with path.open("wb") as out:
        out.write(packer.compress(b"["))
        for _ in range(decoded // len(unit)):
            out.write(packer.compress(unit))
        out.write(packer.compress(b"{}]") + packer.flush())
    return path.stat().st_size


def test_a_gzip_bomb_is_refused_with_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "bomb-400MB.json.gz"
    size = write_gzip_bomb(path, 400 * MIB)
    assert size < 400 * 1024  # 400 KiB on the wire, 400 MiB decoded: within the size cap
    report = poll_in_a_child(path, "gzip")
    assert report["outcome"].startswith(
        "bad_body: account 'acme', trigger 'leads': GET http://127.0.0.1:"
    )
    assert "the response decompresses to more than 100 times its" in report["outcome"]
    assert report["peak_kib"] - report["before_kib"] < 64 * 1024  # MiB: the floor and a step


def test_an_uncompressed_body_of_empty_objects_is_refused_unparsed(tmp_path: Path) -> None:
    """120 MiB of ``[{},{},...]``: 84 million structural bytes, past the parse budget."""
    path = tmp_path / "empty-objects-120MiB.json"
    unit = b"{}," * (MIB // 3)
    with path.open("wb") as out:
        out.write(b"[")
        for _ in range(120):
            out.write(unit)
        out.write(b"{}]")
    report = poll_in_a_child(path, "")
    assert report["outcome"].startswith("bad_body: account 'acme', trigger 'leads': GET ")
    assert "more than 50,000,000 JSON brackets and separators" in report["outcome"]
    # Buffered (it is within the size cap), never parsed: 42 million objects would be ~3 GB.
    assert report["peak_kib"] - report["before_kib"] < 3 * 120 * 1024
