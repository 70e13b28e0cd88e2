"""Shared helpers for the benchmarks (issue 7). Run by hand, never as timed tests.

What is here:

* statistics: :func:`median`, :func:`percentile`, :func:`fmt_s`, :func:`ratio`;
* children: :func:`run_child` runs a command to its end and returns its wall time and its
  own ``rusage`` (``os.wait4``: peak RSS and CPU of *that* child, not of all children);
* memory: :func:`proc_status_kb` reads ``VmRSS``/``VmHWM`` from ``/proc`` (no psutil);
* services, each in its own process, bound to 127.0.0.1 on a free port:
  :class:`SimulatorProcess` (the embedded Meet Alfred simulator with N seed-shaped leads,
  the list body encoded before it says it is ready) and :class:`ReceiverProcess` (a bare
  ASGI app under uvicorn, uvloop + httptools, answering every POST with 204 and counting);
* :func:`write_config` writes an engine configuration (TOML) for a run;
* :func:`floor_fetch_cmd`: the floor of a poll, a bare process that fetches the body with
  httpx and parses it with ``json.loads``;
* :class:`Split` / :func:`instrumented_poll`: the engine's own time split for one poll,
  in process, by wrapping (never editing) the engine's functions; also GC time;
* :func:`profile_hot_spots`: a pyinstrument profile reduced to the top functions by self
  and inclusive time, each with its share of the whole.

``python benchmarks/common.py simulator|receiver ...`` are the entry points of the two
service processes; the benchmark scripts start them through the classes above.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
# The engine under test: this checkout by default, or another source tree (e.g. a snapshot
# of an older commit made with benchmarks/snapshot.sh) given by BENCH_ENGINE_SRC. It is put
# first on the path of this process and of every child, ahead of the installed package.
ENGINE_SRC = Path(os.environ.get("BENCH_ENGINE_SRC") or ROOT).resolve()
if str(ENGINE_SRC) not in sys.path:
    sys.path.insert(0, str(ENGINE_SRC))
# Where profiles (pyinstrument trees) are written.
PROFILE_DIR = Path(os.environ.get("BENCH_PROFILE_DIR") or HERE / "profiles").resolve()
CHILD_ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(
        p for p in (str(ENGINE_SRC), os.environ.get("PYTHONPATH", "")) if p
    ),
}
API_KEY = "demo"
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # 24 bytes, base64; benchmark only
ENGINE_CMD = [PY, "-m", "trigger_engine"]


# --------------------------------------------------------------------------- statistics


def pg_admin(url: str) -> Any:
    """An autocommit psycopg connection to ``url``'s server (for CREATE/DROP DATABASE)."""
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return psycopg.connect(
        host=u.host or "127.0.0.1",
        port=u.port or 5432,
        user=u.username,
        password=u.password,
        dbname=u.database or "postgres",
        autocommit=True,
    )


def pg_url(base: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(base).set(database=name).render_as_string(hide_password=False)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100), nearest-rank on the sorted values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return float(ordered[rank - 1])


def fmt_s(seconds: float) -> str:
    return f"{seconds:.3f} s" if seconds < 10 else f"{seconds:.2f} s"


def ratio(value: float, floor: float) -> float:
    return value / floor if floor else float("nan")


def mb(n_bytes: float) -> str:
    return f"{n_bytes / 1e6:.1f} MB"


def cpu_busy(interval: float = 1.0) -> float:
    """Fraction (0-1) of all CPUs busy over ``interval`` seconds, from /proc/stat."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields), idle

    total0, idle0 = sample()
    time.sleep(interval)
    total1, idle1 = sample()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def wait_quiet(threshold: float = 0.15, max_wait: float = 45.0) -> float:
    """Wait (up to ``max_wait`` s) until the machine is nearly idle: other work on these
    2 cores (other people's test runs) distorts wall times. Returns the last busy fraction
    seen, to be reported next to the figures."""
    deadline = time.monotonic() + max_wait
    busy = cpu_busy()
    while busy > threshold and time.monotonic() < deadline:
        busy = cpu_busy()
    return busy


def log(*parts: object) -> None:
    """Progress on stderr (the figures go to stdout)."""
    print(*parts, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- children


@dataclass
class ChildResult:
    cmd: list[str]
    wall: float  # seconds from spawn to exit
    returncode: int
    maxrss_kb: int  # the child's own peak RSS (ru_maxrss, KiB on Linux)
    user: float  # CPU seconds
    system: float
    stdout: str
    stderr: str

    @property
    def cpu(self) -> float:
        return self.user + self.system

    def check(self) -> ChildResult:
        if self.returncode != 0:
            raise RuntimeError(
                f"{' '.join(self.cmd[:6])} ... exited {self.returncode}:\n"
                f"{self.stdout[-2000:]}\n{self.stderr[-4000:]}"
            )
        return self


def run_child(
    cmd: Sequence[str],
    *,
    timeout: float = 600.0,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> ChildResult:
    """Run ``cmd`` to its end; wall time from spawn to reaping, and the child's own rusage
    (``os.wait4``), so peak RSS and CPU are those of this child alone."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            list(cmd),
            stdout=out,
            stderr=err,
            env=CHILD_ENV if env is None else env,
            cwd=HERE if cwd is None else cwd,  # not ROOT: `-m`/`-c` put the cwd first on the path
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        return ChildResult(
            cmd=list(cmd),
            wall=wall,
            returncode=proc.returncode,
            maxrss_kb=usage.ru_maxrss,
            user=usage.ru_utime,
            system=usage.ru_stime,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
        )


def proc_status_kb(pid: int | str = "self") -> dict[str, int]:
    """VmRSS, VmHWM (peak RSS), VmSize of a process, in KiB, from /proc/PID/status."""
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM", "VmSize", "Threads"):
                values[name] = int(rest.split()[0])
    return values


def self_peak_rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def children_peak_rss_kb() -> int:
    """Peak RSS of the largest child reaped so far (RUSAGE_CHILDREN is a max, not a sum)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


# --------------------------------------------------------------------------- services


def _die_with_parent() -> None:
    """In a child, before exec: receive SIGTERM when the harness dies (Linux prctl
    PR_SET_PDEATHSIG), so no simulator or receiver outlives an interrupted benchmark."""
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _ServiceProcess:
    """A child process that prints one JSON line when it is ready."""

    role = ""

    def __init__(self, args: list[str], ready_timeout: float = 180.0) -> None:
        self.args = args
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}

    def __enter__(self) -> _ServiceProcess:
        self.proc = subprocess.Popen(
            [PY, str(HERE / "common.py"), self.role, *self.args],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            cwd=HERE,
            env=CHILD_ENV,
            preexec_fn=_die_with_parent,
        )
        assert self.proc.stdout is not None
        line: list[bytes] = []

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            line.append(self.proc.stdout.readline())

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(self.ready_timeout)
        if not line or not line[0]:
            self.stop()
            raise RuntimeError(f"the {self.role} process did not start")
        self.info = json.loads(line[0])
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


class SimulatorProcess(_ServiceProcess):
    """The embedded simulator in its own process: ``Simulator(initial=K, seed=S)`` then
    ``add_leads(N)``; the full lead list is encoded (and cached by the simulator) before
    it reports ready. ``.base_url``, ``.info["leads_body_bytes"]``."""

    role = "simulator"

    def __init__(
        self,
        *,
        leads: int = 0,
        initial: int = 0,
        seed: int = 7,
        tick: float | None = None,
        rotate_every: float | None = None,
    ) -> None:
        args = ["--leads", str(leads), "--initial", str(initial), "--seed", str(seed)]
        if tick:
            args += ["--tick", str(tick)]
        if rotate_every:
            args += ["--rotate-every", str(rotate_every)]
        super().__init__(args)

    def __enter__(self) -> SimulatorProcess:
        super().__enter__()
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.info['port']}"

    @property
    def leads_url(self) -> str:
        return f"{self.base_url}/leads?api_key={API_KEY}"

    def add_leads(self, n: int) -> None:
        import httpx

        httpx.post(
            f"{self.base_url}/_control/leads", params={"n": n}, timeout=120
        ).raise_for_status()

    def rotate(self) -> None:
        """One new lead, the oldest one gone (the list keeps its size)."""
        import httpx

        httpx.post(f"{self.base_url}/_bench/rotate", timeout=60).raise_for_status()


class ReceiverProcess(_ServiceProcess):
    """A fast webhook receiver in its own process: a bare ASGI app under uvicorn
    (uvloop, httptools), 204 to every POST. ``GET /count`` is how many POSTs it got."""

    role = "receiver"

    def __init__(self) -> None:
        super().__init__([])

    def __enter__(self) -> ReceiverProcess:
        super().__enter__()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.info['port']}/hook"

    def count(self) -> int:
        import httpx

        r = httpx.get(f"http://127.0.0.1:{self.info['port']}/count", timeout=10)
        return int(r.json()["count"])


# ---- the service processes' own code (run as ``python common.py ROLE``)


def _simulator_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--leads", type=int, default=0)
    parser.add_argument("--initial", type=int, default=0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--tick", type=float, default=0.0)
    parser.add_argument("--rotate-every", type=float, default=0.0)
    args = parser.parse_args(argv)

    import asyncio

    simulator, make_app, list_body = simulator_parts()
    sim = simulator(api_key=API_KEY, seed=args.seed, initial=args.initial)
    if args.leads:
        sim.add_leads(args.leads)
    body_bytes = len(list_body(sim, "leads"))  # warms the simulator's encoded-list cache
    gc.collect()
    gc.freeze()  # the records never die: keep the collector off them while serving

    def rotate() -> None:
        """One new lead, and the oldest one gone: the list keeps its size (memory.py)."""
        with sim._lock:  # the simulator's own lock, as its mutators take it
            sim.add_leads(1)
            sim.leads.pop()
            sim.invalidate()

    async def serve() -> None:
        from aiohttp import web

        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)

        async def rotate_handler(_request: web.Request) -> web.Response:
            rotate()
            return web.json_response({"leads": len(sim.leads)})

        app = make_app(sim)
        app.router.add_post("/_bench/rotate", rotate_handler)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        tasks = []
        if args.tick > 0:

            async def tick() -> None:
                while True:
                    await asyncio.sleep(args.tick)
                    sim.tick()

            tasks.append(asyncio.create_task(tick()))
        if args.rotate_every > 0:

            async def rotate_often() -> None:
                while True:
                    await asyncio.sleep(args.rotate_every)
                    rotate()

            tasks.append(asyncio.create_task(rotate_often()))
        print(
            json.dumps({"port": port, "leads": len(sim.leads), "leads_body_bytes": body_bytes}),
            flush=True,
        )
        await stop.wait()
        for task in tasks:
            task.cancel()
        await runner.cleanup()

    asyncio.run(serve())
    return 0


def _receiver_main(argv: list[str]) -> int:
    import uvicorn

    del argv
    count = 0

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal count
        if scope["type"] != "http":
            return
        if scope["method"] == "POST":
            more = True
            while more:
                message = await receive()
                more = message.get("more_body", False)
            count += 1
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        body = json.dumps({"count": count}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
        backlog=2048,
    )
    server = uvicorn.Server(config)
    print(json.dumps({"port": sock.getsockname()[1]}), flush=True)
    server.run(sockets=[sock])
    return 0


# --------------------------------------------------------------------------- the engine's pieces


def engine_parts() -> Any:
    """The engine internals the benchmarks use, by their names since issue 11
    (``trigger_engine.db``, ``polling``, ``delivery``, ``runtime``, ``sandbox``, ``types``),
    falling back to the flat layout before it (``store.py``, ``poller.py``,
    ``scheduler.py``, ...): the scripts work against snapshots taken before the issue-11
    layout (e.g. ``741c8a4``) as well as after. Imported on first call, in the process that
    calls it (a child, run against ``ENGINE_SRC``). The fields:

    ``layout`` ("issue-11" or "flat"); ``load_config``, ``now``, ``logs``; ``Store``,
    ``Poller``, ``Source``, ``Daemon`` (``Engine`` before), ``poll_jobs``, ``pool_size``
    (the daemon's database pool for a config; None before 2026-12-02); the modules
    ``cli``, ``poller``, ``source``, ``dispatcher`` (``Dispatcher``, ``in_daemon_thread``),
    ``attempt`` (where the dispatcher looks up ``body_for``/``headers_for``), ``jobs``
    (``schedule_polls``; None before), ``schema`` (the tables); ``body_for``, ``headers_for``,
    ``new_event_id``, ``AttemptOutcome``, ``DELIVERED``; ``deliveries(store)`` (the object
    with ``claim_due``/``record_attempts``); ``store_steps``: (owner, attribute, label) of
    the store's steps of a poll and a drain, for :func:`wrapped`.
    """
    import importlib
    from types import SimpleNamespace

    def mod(name: str) -> Any:
        return importlib.import_module(f"trigger_engine.{name}")

    try:
        store = mod("db.store")
    except ModuleNotFoundError as exc:
        if exc.name not in ("trigger_engine.db", "trigger_engine.db.store"):
            raise
        store = None
    if store is not None:  # the issue-11 layout
        daemon, jobs, types = mod("runtime.daemon"), mod("runtime.jobs"), mod("types")
        try:  # the enums are in states.py since 2026-12-02 (types.py held them before)
            states = mod("states")
        except ModuleNotFoundError:
            states = types
        try:  # since 2026-12-02 what run --once needs of the plan is apart from APScheduler
            plan = mod("runtime.plan")
        except ModuleNotFoundError:
            plan = jobs
        polls, seen, events, deliveries = (
            mod(f"db.{m}") for m in ("polls", "seen", "events", "deliveries")
        )
        parts = SimpleNamespace(
            layout="issue-11",
            cli=mod("cli.main"),
            poller=mod("polling.poller"),
            source=mod("polling.source"),
            dispatcher=mod("delivery.dispatcher"),
            attempt=mod("delivery.attempt"),
            logs=mod("ops.logs"),
            schema=mod("db.schema"),
            jobs=jobs,
            Daemon=daemon.Daemon,
            poll_jobs=plan.poll_jobs,
            pool_size=getattr(plan, "pool_size", None),
            new_event_id=mod("core.events").new_event_id,
            AttemptOutcome=types.AttemptOutcome,
            DELIVERED=states.DeliveryStatus.DELIVERED,
            deliveries=lambda st: st.deliveries,
            store_steps=[
                (polls.PollRepository, "record", "store: polls.record (one transaction)"),
                (seen, "known_keys", "store:   seen.known_keys (SELECT ... IN)"),
                (seen, "insert_keys", "store:   seen.insert_keys (INSERT seen_keys)"),
                (events, "insert_events", "store:   insert_events (events + deliveries)"),
                (polls.PollRepository, "state", "store: polls.state reads"),
                (polls.PollRepository, "claim", "store: polls.claim"),
                (deliveries.DeliveryRepository, "release_claims", "store: release_claims"),
                (events.EventRepository, "prune", "store: events.prune (retention sweep)"),
                (deliveries.DeliveryRepository, "claim_due", "delivery: claim_due"),
                (deliveries.DeliveryRepository, "record_attempts", "delivery: record_attempts"),
            ],
        )
    else:  # the flat layout, before issue 11
        store, scheduler, delivery = mod("store"), mod("scheduler"), mod("delivery")
        parts = SimpleNamespace(
            layout="flat",
            cli=mod("cli"),
            poller=mod("poller"),
            source=mod("source"),
            dispatcher=delivery,
            attempt=delivery,
            logs=mod("logs"),
            schema=mod("models"),
            jobs=None,
            Daemon=scheduler.Engine,
            poll_jobs=scheduler.poll_jobs,
            pool_size=None,
            new_event_id=store.new_event_id,
            AttemptOutcome=store.AttemptOutcome,
            DELIVERED=store.DELIVERED,
            deliveries=lambda st: st,
            store_steps=[
                (store.Store, "record_poll", "store: record_poll (one transaction)"),
                (store.Store, "_known_keys", "store:   _known_keys (SELECT ... IN)"),
                (store.Store, "_insert_keys", "store:   _insert_keys (INSERT seen_keys)"),
                (store.Store, "_create_events", "store:   _create_events (events + deliveries)"),
                (store.Store, "poll_state", "store: poll_state reads"),
                (store.Store, "claim_poll", "store: claim_poll"),
                (store.Store, "release_claims", "store: release_claims"),
                (store.Store, "prune", "store: prune (retention sweep)"),
                (store.Store, "claim_due", "delivery: claim_due"),
                (store.Store, "record_attempts", "delivery: record_attempts"),
            ],
        )
    parts.Store = store.Store
    parts.Poller, parts.Source = parts.poller.Poller, parts.source.Source
    parts.body_for, parts.headers_for = parts.attempt.body_for, parts.attempt.headers_for
    parts.load_config = mod("config").load_config
    parts.now = mod("clock").now
    return parts


def simulator_parts() -> tuple[Any, Callable[[Any], Any], Callable[[Any, str], bytes]]:
    """The embedded simulator: ``(Simulator, make_app(sim), list_body(sim, kind))``, from
    ``trigger_engine.sandbox`` (issue 11) or, before it, ``trigger_engine.simulator``
    (``sim.app()``, ``sim._full_body``)."""
    try:
        from trigger_engine.sandbox import Simulator, make_app

        return Simulator, make_app, lambda sim, kind: sim.list_body(kind)
    except ModuleNotFoundError as exc:
        if exc.name != "trigger_engine.sandbox":
            raise
    from trigger_engine.simulator import Simulator

    return Simulator, lambda sim: sim.app(), lambda sim, kind: sim._full_body(kind)


# --------------------------------------------------------------------------- configs


def write_config(
    path: Path,
    *,
    base_url: str,
    database: Path,
    accounts: Sequence[str] = ("bench",),
    triggers: dict[str, dict[str, Any]] | None = None,
    sinks: Sequence[dict[str, Any]] = (),
    engine: dict[str, Any] | None = None,
    database_url: str | None = None,
) -> Path:
    """An engine configuration for a run (TOML, written by hand: values are simple);
    ``database_url`` (e.g. PostgreSQL) instead of the SQLite file ``database``."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(str(v))

    url = database_url or "sqlite:///" + str(database)
    lines = ["[engine]", f"database = {value(url)}"]
    for k, v in (engine or {}).items():
        lines.append(f"{k} = {value(v)}")
    lines += ["", "[source]", f"base_url = {value(base_url)}", 'timeout = "600s"', ""]
    for name in accounts:
        lines += ["[[accounts]]", f"name = {value(name)}", f"api_key = {value(API_KEY)}", ""]
    for name, settings in (triggers or {"leads": {}}).items():
        lines.append(f"[triggers.{name}]")
        lines += [f"{k} = {value(v)}" for k, v in settings.items()]
        lines.append("")
    for sink in sinks:
        lines.append("[[sinks]]")
        lines += [f"{k} = {value(v)}" for k, v in sink.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def engine_cmd(*args: str) -> list[str]:
    return [*ENGINE_CMD, *args]


def floor_fetch_cmd(url: str, parser: str = "json") -> list[str]:
    """The floor of one poll: a bare Python process that GETs the body with httpx and
    parses it (``json.loads``, or ``orjson.loads`` for the secondary floor)."""
    code = (
        f"import httpx, {parser}\n"
        f"r = httpx.get({url!r}, timeout=600)\n"
        "r.raise_for_status()\n"
        f"items = {parser}.loads(r.content)\n"
        "assert isinstance(items, list)\n"
        "print(len(items))\n"
    )
    return [PY, "-c", code]


# --------------------------------------------------------------------------- in-process split


@dataclass
class Split:
    """Accumulated time per named phase (seconds), plus GC pauses."""

    phases: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    gc_time: float = 0.0
    gc_runs: dict[int, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, seconds: float) -> None:
        self.phases[name] = self.phases.get(name, 0.0) + seconds
        self.calls[name] = self.calls.get(name, 0) + 1


@contextlib.contextmanager
def gc_timer(split: Split) -> Iterator[None]:
    """Adds the collector's pauses (all generations) to ``split.gc_time``."""
    started: list[float] = []

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started.append(time.perf_counter())
        elif started:
            split.gc_time += time.perf_counter() - started.pop()
            gen = int(info.get("generation", -1))
            split.gc_runs[gen] = split.gc_runs.get(gen, 0) + 1

    gc.callbacks.append(callback)
    try:
        yield
    finally:
        gc.callbacks.remove(callback)


@contextlib.contextmanager
def wrapped(split: Split, owner: Any, attr: str, label: str | None = None) -> Iterator[None]:
    """Time every call of ``owner.attr`` (a module's function or a class's plain method)
    into ``split``; restored afterwards. A missing attribute (the engine changed) is noted,
    not fatal. Works from any thread (polls run in daemon threads)."""
    own = vars(owner)
    original = own.get(attr)
    if original is None or not callable(original):
        split.notes.append(f"{getattr(owner, '__name__', owner)}.{attr} not found: not split")
        yield
        return
    name = label or attr

    def timed(*args: Any, **kwargs: Any) -> Any:  # as a method, ``self`` is in args
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            split.add(name, time.perf_counter() - t0)

    setattr(owner, attr, timed)
    try:
        yield
    finally:
        setattr(owner, attr, original)


def instrumented_run_once(config_path: Path) -> tuple[Split, dict[str, Any]]:
    """What ``trigger-engine run --once -c CONFIG`` does, in this process, with its time
    split by phase: config, store open (migrations), each poll's HTTP fetch, JSON parse,
    keying, and the store's steps, then the delivery drain and the retention sweep."""
    split = Split()
    t0 = time.perf_counter()
    import asyncio

    engine = engine_parts()  # with the CLI: what `python -m trigger_engine` imports
    source = engine.source

    split.add("import trigger_engine (cli, scheduler)", time.perf_counter() - t0)

    report: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        stack.enter_context(gc_timer(split))
        stack.enter_context(wrapped(split, source.Source, "_get", "poll: HTTP GET + parse"))
        stack.enter_context(wrapped(split, source, "parse_items", "poll:   JSON parse (orjson)"))
        stack.enter_context(
            wrapped(split, engine.poller, "key_items", "poll: key_items (dedupe.py)")
        )
        for owner, attr, label in engine.store_steps:
            stack.enter_context(wrapped(split, owner, attr, label))
        t = time.perf_counter()
        config = engine.load_config(config_path)
        split.add("config: load_config", time.perf_counter() - t)
        t = time.perf_counter()
        st = engine.Store.open(config.database_url())
        split.add("store: open + migrations check", time.perf_counter() - t)
        try:
            with source.Source(config.source) as src:
                daemon = engine.Daemon(config, st, src)
                t = time.perf_counter()
                once = asyncio.run(daemon.run_once())
                split.add("engine.run_once total", time.perf_counter() - t)
        finally:
            st.close()
        split.add("in-process total (import to exit)", time.perf_counter() - t0)
        report = {
            "polls": [
                {
                    "outcome": p.outcome,
                    "items": p.items,
                    "new_events": p.new_events,
                    "remembered": p.remembered,
                    "duration": p.duration,
                }
                for p in once.polls
            ],
            "delivered": once.delivery.delivered,
        }
    return split, report


def print_split(split: Split, total_label: str = "in-process total (import to exit)") -> list[str]:
    total = split.phases.get(total_label) or max(split.phases.values(), default=0.0)
    lines = []
    for name, seconds in split.phases.items():
        share = f"{100 * seconds / total:5.1f}%" if total else ""
        lines.append(f"  {name:<46} {seconds:8.3f} s {share}  ({split.calls[name]} calls)")
    gens = ", ".join(f"gen{g}: {n}" for g, n in sorted(split.gc_runs.items()))
    share = f"{100 * split.gc_time / total:.1f}%" if total else ""
    lines.append(
        f"  {'GC pauses (all phases, inside the above)':<46} {split.gc_time:8.3f} s "
        f"{share:>6}  ({gens})"
    )
    lines.extend(f"  note: {n}" for n in split.notes)
    return lines


# --------------------------------------------------------------------------- profiling


def profile_hot_spots(
    fn: Callable[[], Any], *, top: int = 15, interval: float = 0.001, save_to: Path | None = None
) -> tuple[Any, list[str]]:
    """Run ``fn`` under pyinstrument; the top functions by self time and by inclusive
    time (each once, however deep its recursion), each with its share of the whole."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=interval, async_mode="disabled")
    profiler.start()
    try:
        result = fn()
    finally:
        session = profiler.stop()
    root = profiler.last_session.root_frame() if profiler.last_session else None
    if root is None:
        return result, ["(no samples)"]
    total = root.time or 1e-9
    self_time: dict[str, float] = {}
    inclusive: dict[str, float] = {}

    def name_of(frame: Any) -> str:
        path = frame.file_path_short or frame.file_path or ""
        path = path.split("site-packages/")[-1]
        return f"{frame.function} ({path}:{frame.line_no})"

    def walk(frame: Any, stack: frozenset[str]) -> None:
        if frame.is_synthetic:  # pyinstrument's "[self]" / await leaves: counted below
            return
        name = name_of(frame)
        own = frame.total_self_time
        self_time[name] = self_time.get(name, 0.0) + max(own, 0.0)
        if name not in stack:
            inclusive[name] = inclusive.get(name, 0.0) + frame.time
            stack = stack | {name}
        for child in frame.children:
            walk(child, stack)

    walk(root, frozenset())
    lines = [f"  total sampled: {total:.2f} s"]
    lines.append("  top by self time:")
    for name, secs in sorted(self_time.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"    {100 * secs / total:5.1f}%  {secs:7.2f} s  {name}")
    lines.append("  top engine functions by inclusive time:")
    engine_only = [
        (n, s) for n, s in inclusive.items() if "trigger_engine/" in n and "benchmarks/" not in n
    ]
    for name, secs in sorted(engine_only, key=lambda kv: -kv[1])[:top]:
        lines.append(f"    {100 * secs / total:5.1f}%  {secs:7.2f} s  {name}")
    if save_to is not None:
        save_to.parent.mkdir(parents=True, exist_ok=True)
        save_to.write_text(session_text(profiler))
    del session
    return result, lines


def session_text(profiler: Any) -> str:
    try:
        return str(profiler.output_text(unicode=False, color=False, show_all=False))
    except TypeError:
        return str(profiler.output_text())


# --------------------------------------------------------------------------- reporting


def shown(path: str | Path) -> str:
    """``path`` as an output may print it for anyone who clones the repository: relative to
    the checkout, under ``$TMPDIR`` or the virtualenv (``$VIRTUAL_ENV``), else its name
    alone; never one machine's absolute path."""
    absolute = Path(os.path.abspath(path))  # symlinks kept: a venv's python is one
    places = (
        (ROOT, ""),
        (Path(os.path.abspath(sys.prefix)), "$VIRTUAL_ENV/"),
        (Path(os.path.abspath(tempfile.gettempdir())), "$TMPDIR/"),
    )
    for base, label in places:
        if absolute.is_relative_to(base):
            return f"{label}{absolute.relative_to(base)}"
    return absolute.name


def machine_summary() -> list[str]:
    import sqlite3

    lines = [
        f"date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"nproc: {os.cpu_count()}",
        f"python: {platform.python_version()} ({shown(sys.executable)})",
        f"sqlite: {sqlite3.sqlite_version}",
        f"uname: {' '.join(platform.uname())}",
    ]
    lines.append(f"engine code: {engine_revision()}")
    return lines


def engine_revision() -> str:
    """Which engine is measured: the source tree, its commit, and whether trigger_engine/
    had uncommitted changes (other people edit it while benchmarks run)."""
    where = ENGINE_SRC
    rev_file = where / ".bench-rev"
    if rev_file.is_file():
        return f"{shown(where)} = snapshot of {rev_file.read_text().strip()}"
    try:
        head = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--short", "trigger_engine"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        return shown(where)
    changes = " + uncommitted changes in trigger_engine/" if dirty else ""
    return f"{shown(where)} @ {head}{changes}"


def header(title: str, argv: Sequence[str] | None = None) -> None:
    print(f"== {title}")
    for line in machine_summary():
        print(f"   {line}")
    print(f"   command: {' '.join(argv or sys.argv)}")


def tmpdir(prefix: str) -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix=f"te-bench-{prefix}-")


def _split_main(argv: list[str]) -> int:
    """``common.py split CONFIG``: the engine's own time split of ``run --once``."""
    split, report = instrumented_run_once(Path(argv[0]))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "phases": split.phases,
                "calls": split.calls,
                "gc_time": split.gc_time,
                "gc_runs": {str(k): v for k, v in split.gc_runs.items()},
                "notes": split.notes,
                "report": report,
                "maxrss_kb": usage.ru_maxrss,
            }
        )
    )
    return 0


def _profile_main(argv: list[str]) -> int:
    """``common.py profile CONFIG OUT.txt``: every poll of the config, in this process's
    main thread, under pyinstrument (store open excluded); hot spots on stdout (JSON)."""
    engine = engine_parts()
    config = engine.load_config(Path(argv[0]))
    store = engine.Store.open(config.database_url())
    split = Split()
    try:
        with engine.Source(config.source) as src:
            poller = engine.Poller(config, store, src)

            def polls() -> list[Any]:
                with gc_timer(split):
                    return [poller.poll(a, t) for a, t in engine.poll_jobs(config)]

            reports, lines = profile_hot_spots(polls, save_to=Path(argv[1]))
    finally:
        store.close()
    lines.append(
        f"  GC pauses during the profiled polls: {split.gc_time:.2f} s "
        f"({', '.join(f'gen{g}: {n}' for g, n in sorted(split.gc_runs.items()))})"
    )
    print(json.dumps({"lines": lines, "reports": [r.outcome for r in reports]}))
    return 0


def split_in_child(config: Path) -> dict[str, Any]:
    result = run_child([PY, str(HERE / "common.py"), "split", str(config)]).check()
    data: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


def split_lines(data: dict[str, Any]) -> list[str]:
    split = Split(
        phases=data["phases"],
        calls=data["calls"],
        gc_time=data["gc_time"],
        gc_runs={int(k): v for k, v in data["gc_runs"].items()},
        notes=data["notes"],
    )
    return print_split(split)


def profile_in_child(config: Path, out: Path) -> list[str]:
    result = run_child([PY, str(HERE / "common.py"), "profile", str(config), str(out)]).check()
    lines: list[str] = json.loads(result.stdout.strip().splitlines()[-1])["lines"]
    return lines


if __name__ == "__main__":
    role, rest = sys.argv[1], sys.argv[2:]
    mains = {
        "simulator": _simulator_main,
        "receiver": _receiver_main,
        "split": _split_main,
        "profile": _profile_main,
    }
    if role not in mains:
        sys.exit(f"unknown role {role!r}")
    sys.exit(mains[role](rest))
