"""The command line: parse the arguments, call one command (cli/commands.py), map errors
to exit codes.

0 success, 1 a runtime failure, 2 bad usage or configuration. Errors are one sentence on
stderr, secrets redacted and control characters escaped (it may quote an upstream's text);
a traceback only with ``--debug``.

``run`` takes the process's signals (:mod:`trigger_engine.runtime.signals`) as soon as the
command line is parsed, before the commands, and with them the whole engine, are imported
(half a second): a SIGHUP or SIGTERM in that time must not end the process.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn

from trigger_engine import __version__
from trigger_engine.core.durations import DAY, DurationRange, show
from trigger_engine.core.escape import escape_controls
from trigger_engine.errors import TriggerEngineError, UsageError
from trigger_engine.ops import logs
from trigger_engine.runtime import signals
from trigger_engine.states import (
    ACCOUNT_NAME_MAX,
    DELIVERY_STATUSES,
    EVENT_TYPE_MAX,
    SINK_NAME_MAX,
    TRIGGER_NAME_MAX,
)

PROG = "trigger-engine"

# The ranges of the options (the README's "Commands" section gives them too). Names are
# bounded by what the database can hold (states.py); a longer one cannot name anything.
LIMIT_MAX = 1_000_000  # events --limit
SEARCH_MAX = 1000  # events --search: characters
SIMULATOR_INTERVAL = DurationRange(high=30 * DAY)  # simulator --interval (0: never)
DEMO_DURATION = DurationRange(high=30 * DAY)  # demo --duration


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (exit 2, one sentence) instead of printing usage."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _common(parser: argparse.ArgumentParser) -> None:
    """The global options, also after the command name (``status -c FILE --debug``): given
    there they win; not given, the values before the command name (or the defaults) stay."""
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="configuration file (TOML)",
    )
    _debug(parser)


def _debug(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="debug logs and tracebacks",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command and option."""
    parser = _Parser(prog=PROG, description="Self-hosted polling triggers for Meet Alfred.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("-c", "--config", metavar="FILE", help="configuration file (TOML)")
    parser.add_argument("--debug", action="store_true", help="debug logs and tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    run = sub.add_parser("run", help="poll and deliver until SIGINT/SIGTERM")
    _common(run)
    run.add_argument(
        "--once", action="store_true", help="poll every trigger once, deliver what is due, exit"
    )
    run.add_argument(
        "--strict",
        action="store_true",
        help="with --once: exit 1 when a delivery attempt failed too (not only a poll)",
    )

    check = sub.add_parser(
        "check",
        help="validate the config, request each trigger's first page, send each sink a test event",
    )
    _common(check)
    check.add_argument(
        "--no-sinks", action="store_true", help="do not send the engine.test event to the sinks"
    )
    check.add_argument("--json", action="store_true", help="machine-readable output")

    db = sub.add_parser("db", help="database maintenance")
    _common(db)
    db_sub = db.add_subparsers(dest="db_command", metavar="ACTION", parser_class=_Parser)
    db_sub.required = True
    upgrade = db_sub.add_parser("upgrade", help="apply the database migrations")
    _common(upgrade)

    sim = sub.add_parser("simulator", help="serve the embedded Meet Alfred simulator")
    sim.add_argument("--port", type=_port, default=8765, help="port on 127.0.0.1 (default 8765)")
    sim.add_argument("--api-key", default="demo", help="the API key it accepts (default demo)")
    sim.add_argument(
        "--interval",
        type=_duration(SIMULATOR_INTERVAL),
        default=5.0,
        metavar="DURATION",
        help="add new items this often (default 5s; 0: never)",
    )
    sim.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    _debug(sim)

    status = sub.add_parser("status", help="triggers and sinks: last polls, backlogs")
    _common(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")

    events = sub.add_parser(
        "events",
        help="list events, newest first, with their deliveries; 'events show ID': one event",
    )
    _common(events)
    events.add_argument("action", nargs="?", choices=["show"], help="show: one event in full")
    events.add_argument("event_id", nargs="?", metavar="ID", help="show: the event's id")
    events.add_argument(
        "--search",
        metavar="TEXT",
        type=_search,
        help="only events whose payload contains TEXT (ignoring case)",
    )
    _selection(events)
    events.add_argument(
        "--sink",
        action="append",
        default=[],
        metavar="NAME",
        type=_sink,
        help="only events with a delivery to this sink (a removed sink's name too)",
    )
    events.add_argument("--key", metavar="KEY", help="only the event of this item key")
    events.add_argument(
        "--limit", type=_limit, default=50, help=f"at most N (default 50; 1-{LIMIT_MAX})"
    )
    events.add_argument("--json", action="store_true", help="machine-readable output")

    replay = sub.add_parser("replay", help="queue deliveries again (same webhook-id)")
    _common(replay)
    replay.add_argument("--event", action="append", default=[], metavar="ID", help="event id")
    _selection(replay)
    replay.add_argument("--sink", action="append", default=[], metavar="NAME", type=_sink)
    replay.add_argument("--dry-run", action="store_true", help="only count")

    sinks = sub.add_parser(
        "sinks",
        help="list sinks; pause, resume, enable or disable one; drop a removed sink's "
        "deliveries; 'sinks secret' prints a new signing secret",
    )
    _common(sinks)
    sinks.add_argument(
        "action", nargs="?", choices=["pause", "resume", "enable", "disable", "drop", "secret"]
    )
    sinks.add_argument("name", nargs="?", metavar="NAME", type=_sink)
    sinks.add_argument(
        "--to",
        metavar="OTHER",
        type=_sink,
        help="drop: first queue their events to this configured sink (same webhook-id)",
    )
    sinks.add_argument("--dry-run", action="store_true", help="drop: only count")

    backfill = sub.add_parser("backfill", help="fire, once, what a first poll only remembered")
    _common(backfill)
    backfill.add_argument("--trigger", action="append", default=[], metavar="T", type=_trigger)
    backfill.add_argument("--account", action="append", default=[], metavar="A", type=_account)
    backfill.add_argument("--dry-run", action="store_true", help="only count")

    triggers = sub.add_parser(
        "triggers", help="list triggers; pause or resume one; retry one now (clear its backoff)"
    )
    _common(triggers)
    triggers.add_argument("action", nargs="?", choices=["pause", "resume", "retry"])
    triggers.add_argument("account", nargs="?", metavar="ACCOUNT", type=_account)
    triggers.add_argument("trigger", nargs="?", metavar="TRIGGER", type=_trigger)

    demo = sub.add_parser("demo", help="simulator + receiver + engine, no config, no network")
    demo.add_argument(
        "--duration",
        type=_duration(DEMO_DURATION),
        default=None,
        metavar="SECONDS",
        help="stop after this long",
    )
    _debug(demo)
    return parser


def _selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--type", action="append", default=[], metavar="T", type=_event_type, help="event type"
    )
    parser.add_argument("--account", action="append", default=[], metavar="A", type=_account)
    parser.add_argument("--since", metavar="TIME", help="ISO 8601, or a duration ago (2h)")
    parser.add_argument("--until", metavar="TIME", help="ISO 8601, or a duration ago (2h)")
    parser.add_argument(
        "--status",
        action="append",
        default=[],
        metavar="S",
        help=", ".join(DELIVERY_STATUSES) + " (events: also quarantined)",
    )


def _limit(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive whole number")
    if int(text) > LIMIT_MAX:
        raise argparse.ArgumentTypeError(f"'{text}' is outside 1-{LIMIT_MAX}")
    return int(text)


def _name(limit: int, what: str) -> Callable[[str], str]:
    """An argparse type: a name of at most ``limit`` characters (``what`` says what it names)."""

    def check(text: str) -> str:
        if len(text) > limit:
            raise argparse.ArgumentTypeError(
                f"{show(text)} is longer than {limit} characters, the most {what} may have"
            )
        return text

    return check


def _search(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("give some text to search for")
    if len(text) > SEARCH_MAX:
        raise argparse.ArgumentTypeError(
            f"{show(text)} is longer than {SEARCH_MAX} characters, the most a search may have"
        )
    return text


_account = _name(ACCOUNT_NAME_MAX, "an account name")
_sink = _name(SINK_NAME_MAX, "a sink name")
_trigger = _name(TRIGGER_NAME_MAX, "a trigger name")
_event_type = _name(EVENT_TYPE_MAX, "an event type")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is outside 0-65535")
    return value


def _duration(allowed: DurationRange) -> Callable[[str], float]:
    """An argparse type: seconds from a duration within ``allowed``."""

    def seconds(text: str) -> float:
        try:
            return allowed.check(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"'{text}': {exc}") from None

    return seconds


def _command(name: str) -> Callable[[argparse.Namespace], int]:
    """The function of the command ``name``. The commands are imported here, not at the
    top: they import the whole engine, and ``run`` takes its signals before that."""
    from trigger_engine.cli.startup import importing_without_gc  # not on --help's path

    with importing_without_gc("trigger_engine.cli.commands"):
        from trigger_engine.cli import commands

    return {
        "run": commands.cmd_run,
        "check": commands.cmd_check,
        "db": commands.cmd_db,
        "status": commands.cmd_status,
        "events": commands.cmd_events,
        "replay": commands.cmd_replay,
        "sinks": commands.cmd_sinks,
        "triggers": commands.cmd_triggers,
        "backfill": commands.cmd_backfill,
        "simulator": commands.cmd_simulator,
        "demo": commands.cmd_demo,
    }[name]


def _error_line(sentence: str) -> None:
    """Print ``sentence`` as the command line's error line (a backstop's, from a thread)."""
    print(f"{PROG}: error: {sentence}", file=sys.stderr, flush=True)


def _quiet_after_closed_pipe() -> int:
    """Our reader closed the pipe (``| head``): it has what it wanted. Whatever is still
    buffered for it goes nowhere (Python would report a second BrokenPipeError when it
    flushes at exit); exit 0, quietly."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        if args.command == "run" and not args.once:
            signals.process_signals(say=_error_line)  # first: see the module's docstring
        code = _command(args.command)(args)
        sys.stdout.flush()  # a closed pipe is found here, not at exit
    except BrokenPipeError:
        code = _quiet_after_closed_pipe()
        signals.finished(code)
        return code
    except TriggerEngineError as exc:
        if debug:
            traceback.print_exc()
        reason = escape_controls(logs.REDACTION.redact(str(exc)))
        signals.final_words(f"{PROG}: error: {reason}", exc.exit_code)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the last line of defence: one sentence, no secret
        if debug:
            traceback.print_exc()
        reason = escape_controls(logs.REDACTION.redact(f"{type(exc).__name__}: {exc}"))
        signals.final_words(
            f"{PROG}: unexpected error: {reason} (run with --debug for the traceback)", 1
        )
        return 1
    signals.finished(code)
    return code
