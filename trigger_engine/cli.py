"""The command line: parse, call one function, map errors to exit codes.

0 success, 1 a runtime failure, 2 bad usage or configuration. Errors are one sentence on
stderr; a traceback only with ``--debug``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn

from trigger_engine import __version__, logs
from trigger_engine.config import Config, find_config_path, load_config, parse_duration
from trigger_engine.errors import FailureKind, SourceError, TriggerEngineError, UsageError
from trigger_engine.scheduler import Engine
from trigger_engine.source import Source
from trigger_engine.store import Store

PROG = "trigger-engine"


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (exit 2, one sentence) instead of printing usage."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", metavar="FILE", help="configuration file (TOML)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Self-hosted polling triggers for Meet Alfred.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--debug", action="store_true", help="debug logs and tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    run = sub.add_parser("run", help="poll and deliver until SIGINT/SIGTERM")
    _common(run)
    run.add_argument(
        "--once", action="store_true", help="poll every trigger once, deliver what is due, exit"
    )

    check = sub.add_parser("check", help="validate the config and test each account's API key")
    _common(check)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", metavar="ACTION", parser_class=_Parser)
    db_sub.required = True
    upgrade = db_sub.add_parser("upgrade", help="apply the database migrations")
    _common(upgrade)

    sim = sub.add_parser("simulator", help="serve the embedded Meet Alfred simulator")
    sim.add_argument("--port", type=_port, default=8765, help="port on 127.0.0.1 (default 8765)")
    sim.add_argument("--api-key", default="demo", help="the API key it accepts (default demo)")
    sim.add_argument(
        "--interval",
        type=_seconds,
        default=5.0,
        metavar="DURATION",
        help="add new items this often (default 5s; 0: never)",
    )
    sim.add_argument("--seed", type=int, default=None, help="random seed (default: random)")

    demo = sub.add_parser("demo", help="simulator + receiver + engine, no config, no network")
    demo.add_argument(
        "--duration", type=_seconds, default=None, metavar="SECONDS", help="stop after this long"
    )
    return parser


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is outside 0-65535")
    return value


def _seconds(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"'{text}': {exc}") from None


# ------------------------------------------------------------------------- commands


def _load(args: argparse.Namespace) -> Config:
    config = load_config(find_config_path(args.config, os.environ))
    logs.setup(
        level=logging.DEBUG if args.debug else logging.INFO,
        json_lines=config.engine.log_format == "json",
        secrets=config.secrets(),
    )
    return config


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(args)
    store = Store.open(config.database_url())
    try:
        with Source(config.source) as source:
            engine = Engine(config, store, source)
            if not args.once:
                asyncio.run(engine.run())
                return 0
            report = asyncio.run(engine.run_once())
    finally:
        store.close()
    for poll in report.polls:
        if poll.ok:
            what = (
                f"first poll, {poll.remembered} remembered, {poll.new_events} fired"
                if poll.first_poll
                else f"{poll.new_events} new"
            )
            print(f"{poll.account}/{poll.trigger}: {poll.items} items, {what}")
        else:
            print(f"{poll.account}/{poll.trigger}: failed: {poll.error}")
    d = report.delivery
    print(
        f"deliveries: {d.attempted} attempted, {d.delivered} delivered, "
        f"{d.failed} to retry later, {d.dead} dead"
    )
    return 0 if report.ok else 1


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args)
    print(f"configuration {config.path}: ok")
    failures = 0
    trigger = next((t for t in config.triggers.values() if t.enabled), None)
    if trigger is None:
        print("no enabled trigger to test the API keys with")
        return 1
    with Source(config.source) as source:
        for account in config.accounts:
            try:
                items = source.fetch(account, trigger)
            except SourceError as exc:
                failures += 1
                label = "API key refused" if exc.kind is FailureKind.AUTH else "failed"
                print(f"account '{account.name}': {label}: {exc}")
            else:
                print(f"account '{account.name}': ok ({trigger.name}: {len(items)} items)")
    return 1 if failures else 0


def cmd_db(args: argparse.Namespace) -> int:
    config = _load(args)
    Store.open(config.database_url()).close()
    print("database is up to date")
    return 0


def cmd_simulator(args: argparse.Namespace) -> int:
    from trigger_engine.simulator import serve_forever

    logs.setup(level=logging.DEBUG if args.debug else logging.INFO, secrets=[args.api_key])
    return serve_forever(
        port=args.port, api_key=args.api_key, new_item_interval=args.interval, seed=args.seed
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from trigger_engine.demo import run_demo

    logs.setup(level=logging.DEBUG if args.debug else logging.WARNING)
    return run_demo(args.duration)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "check": cmd_check,
    "db": cmd_db,
    "simulator": cmd_simulator,
    "demo": cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except TriggerEngineError as exc:
        if debug:
            traceback.print_exc()
        print(f"{PROG}: error: {logs.REDACTION.redact(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the last line of defence: one sentence, no secret
        if debug:
            traceback.print_exc()
        reason = logs.REDACTION.redact(f"{type(exc).__name__}: {exc}")
        print(
            f"{PROG}: unexpected error: {reason} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
