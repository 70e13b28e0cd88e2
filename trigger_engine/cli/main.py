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

import orjson

from trigger_engine import __version__
from trigger_engine.cli.render import (
    event_dict,
    event_line,
    node_dicts,
    sink_dicts,
    status_dict,
    status_text,
    trigger_rows,
)
from trigger_engine.clock import now
from trigger_engine.config.models import Config, find_config_path, load_config, parse_duration
from trigger_engine.core.dedupe import key_items
from trigger_engine.core.filters import DELIVERY_STATUSES, EventFilter, build_filter
from trigger_engine.db.store import Store
from trigger_engine.errors import FailureKind, SourceError, TriggerEngineError, UsageError
from trigger_engine.ops import logs
from trigger_engine.polling.poller import subscribed_sinks
from trigger_engine.polling.source import Source
from trigger_engine.runtime.daemon import Engine

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

    status = sub.add_parser("status", help="triggers and sinks: last polls, backlogs")
    _common(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")

    events = sub.add_parser("events", help="list events, newest first, with their deliveries")
    _common(events)
    _selection(events)
    events.add_argument("--key", metavar="KEY", help="only the event of this item key")
    events.add_argument("--limit", type=_positive_int, default=50, help="at most N (default 50)")
    events.add_argument("--json", action="store_true", help="machine-readable output")

    replay = sub.add_parser("replay", help="queue deliveries again (same webhook-id)")
    _common(replay)
    replay.add_argument("--event", action="append", default=[], metavar="ID", help="event id")
    _selection(replay)
    replay.add_argument("--sink", action="append", default=[], metavar="NAME")
    replay.add_argument("--dry-run", action="store_true", help="only count")

    sinks = sub.add_parser("sinks", help="list sinks; enable or disable one")
    _common(sinks)
    sinks.add_argument("action", nargs="?", choices=["enable", "disable"])
    sinks.add_argument("name", nargs="?", metavar="NAME")

    backfill = sub.add_parser("backfill", help="fire, once, what a first poll only remembered")
    _common(backfill)
    backfill.add_argument("--trigger", action="append", default=[], metavar="T")
    backfill.add_argument("--account", action="append", default=[], metavar="A")
    backfill.add_argument("--dry-run", action="store_true", help="only count")

    triggers = sub.add_parser("triggers", help="list triggers; pause or resume one")
    _common(triggers)
    triggers.add_argument("action", nargs="?", choices=["pause", "resume"])
    triggers.add_argument("account", nargs="?", metavar="ACCOUNT")
    triggers.add_argument("trigger", nargs="?", metavar="TRIGGER")

    demo = sub.add_parser("demo", help="simulator + receiver + engine, no config, no network")
    demo.add_argument(
        "--duration", type=_seconds, default=None, metavar="SECONDS", help="stop after this long"
    )
    return parser


def _selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--type", action="append", default=[], metavar="T", help="event type")
    parser.add_argument("--account", action="append", default=[], metavar="A")
    parser.add_argument("--since", metavar="TIME", help="ISO 8601, or a duration ago (2h)")
    parser.add_argument("--until", metavar="TIME", help="ISO 8601, or a duration ago (2h)")
    parser.add_argument(
        "--status", action="append", default=[], metavar="S", help=", ".join(DELIVERY_STATUSES)
    )


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive whole number")
    return int(text)


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
        store.lock_single_node()
        with Source(config.source) as source:
            path = config.path
            engine = Engine(
                config,
                store,
                source,
                reload=None if path is None else (lambda: load_config(path)),
            )
            if not args.once:
                asyncio.run(engine.run())
                return 0
            report = asyncio.run(engine.run_once())
    finally:
        store.close()
    for poll in report.polls:
        if poll.outcome in ("skipped", "lease_lost"):
            print(f"{poll.account}/{poll.trigger}: not polled here: {poll.error}")
        elif poll.ok:
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


def _open(config: Config) -> Store:
    return Store.open(config.database_url())


def _print_json(value: object) -> None:
    print(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def _check_names(config: Config, kind: str, given: Sequence[str], known: Sequence[str]) -> None:
    for name in given:
        if name not in known:
            raise UsageError(
                f"no {kind} named '{name}' in {config.path or 'the configuration'} "
                f"(known: {', '.join(known) or 'none'})"
            )


def cmd_status(args: argparse.Namespace) -> int:
    config = _load(args)
    store = _open(config)
    try:
        moment = now()
        doc = status_dict(config, store.poll_states(), store.sink_stats(), moment)
        doc["nodes"] = node_dicts(store.node_views(moment), moment)
    finally:
        store.close()
    if args.json:
        _print_json(doc)
    else:
        print(status_text(doc))
    return 0


def _filter(
    args: argparse.Namespace,
    config: Config,
    *,
    event_ids: tuple[str, ...] = (),
    sinks: tuple[str, ...] = (),
    item_key: str | None = None,
) -> EventFilter:
    _check_names(config, "account", args.account, [a.name for a in config.accounts])
    return build_filter(
        now=now(),
        since=args.since,
        until=args.until,
        types=tuple(args.type),
        accounts=tuple(args.account),
        statuses=tuple(args.status),
        event_ids=event_ids,
        sinks=sinks,
        item_key=item_key,
    )


def cmd_events(args: argparse.Namespace) -> int:
    config = _load(args)
    selection = _filter(args, config, item_key=args.key)
    store = _open(config)
    try:
        found = store.list_events(selection, limit=args.limit)
    finally:
        store.close()
    if args.json:
        _print_json([event_dict(e) for e in found])
    else:
        for e in found:
            print(event_line(e))
        if not found:
            print("no events match")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    config = _load(args)
    if not args.event and not args.since:
        raise UsageError(
            "replay needs --event ID or --since TIME (see 'trigger-engine replay --help')"
        )
    sink_names = [s.name for s in config.sinks]
    _check_names(config, "sink", args.sink, sink_names)
    selection = _filter(args, config, event_ids=tuple(args.event), sinks=tuple(args.sink))
    store = _open(config)
    try:
        result = store.replay(selection, known_sinks=sink_names, now=now(), dry_run=args.dry_run)
    finally:
        store.close()
    verb = "would queue" if args.dry_run else "queued"
    print(f"{verb} {result.queued} deliveries (of {result.events} events)")
    if result.skipped_disabled:
        print(
            f"skipped {result.skipped_disabled} deliveries to disabled sinks "
            "(re-enable with 'trigger-engine sinks enable NAME', then replay)"
        )
    if result.skipped_unknown:
        print(f"skipped {result.skipped_unknown} deliveries to sinks no longer configured")
    if result.skipped_in_flight:
        print(f"skipped {result.skipped_in_flight} deliveries being attempted right now")
    if args.event and result.events == 0 and not result.skipped_disabled:
        print("no delivery matched those event ids")
    return 0


def cmd_sinks(args: argparse.Namespace) -> int:
    config = _load(args)
    if args.action and not args.name:
        raise UsageError(f"'sinks {args.action}' needs a sink NAME")
    if args.name and not args.action:
        raise UsageError("say 'sinks enable NAME' or 'sinks disable NAME'")
    store = _open(config)
    try:
        if args.action:
            _check_names(config, "sink", [args.name], [s.name for s in config.sinks])
            store.set_sink_enabled(
                args.name, args.action == "enable", reason="disabled by hand", now=now()
            )
            print(f"sink '{args.name}' {args.action}d")
            if args.action == "enable":
                print(
                    "its dead deliveries stay dead: replay them with 'trigger-engine replay "
                    f"--since TIME --sink {args.name} --status dead'"
                )
            return 0
        rows = sink_dicts(config, store.sink_stats(), now())
    finally:
        store.close()
    for s in rows:
        state = s["state"] + (f" ({s['disabled_reason']})" if s["disabled_reason"] else "")
        print(
            f"{s['name']}  {s['url']}  {state}  pending {s['pending']}  failed {s['failed']}  "
            f"dead {s['dead']}  delivered {s['delivered']}"
        )
    if not rows:
        print("no sinks configured")
    return 0


def cmd_triggers(args: argparse.Namespace) -> int:
    config = _load(args)
    if args.action and not (args.account and args.trigger):
        raise UsageError(f"'triggers {args.action}' needs ACCOUNT and TRIGGER")
    store = _open(config)
    try:
        if args.action:
            _check_names(config, "account", [args.account], [a.name for a in config.accounts])
            _check_names(config, "trigger", [args.trigger], list(config.triggers))
            paused = args.action == "pause"
            store.set_paused(args.account, args.trigger, paused=paused, reason="paused by hand")
            print(
                f"{args.account}/{args.trigger} {args.action}d"
                + ("; what it has seen is kept" if paused else "")
            )
            return 0
        rows = trigger_rows(config, store.poll_states())
    finally:
        store.close()
    moment = now()
    for row in rows:
        known = row.state.items_known if row.state else 0
        print(f"{row.account}/{row.trigger}: {row.label(moment)} ({known} items known)")
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    config = _load(args)
    _check_names(config, "trigger", args.trigger, list(config.triggers))
    _check_names(config, "account", args.account, [a.name for a in config.accounts])
    failed = False
    store = _open(config)
    try:
        with Source(config.source) as source:
            for account in config.accounts:
                if args.account and account.name not in args.account:
                    continue
                for trigger in config.triggers.values():
                    if args.trigger and trigger.name not in args.trigger:
                        continue
                    try:
                        items = source.fetch(account, trigger)
                    except SourceError as exc:
                        print(f"{account.name}/{trigger.name}: failed: {exc}")
                        failed = True
                        continue
                    result = store.backfill(
                        account.name,
                        trigger.name,
                        key_items(items, trigger.key),
                        event_type=trigger.event,
                        sinks=subscribed_sinks(config, trigger.event),
                        now=now(),
                        dry_run=args.dry_run,
                    )
                    verb = "would fire" if args.dry_run else "fired"
                    line = f"{account.name}/{trigger.name}: {verb} {result.fired} remembered items"
                    if result.not_listed:
                        line += f" ({result.not_listed} no longer listed by the API)"
                    print(line)
    finally:
        store.close()
    if not args.dry_run:
        print("deliveries are sent by the running daemon, or by 'trigger-engine run --once'")
    return 1 if failed else 0


def cmd_simulator(args: argparse.Namespace) -> int:
    from trigger_engine.sandbox import serve_forever

    logs.setup(level=logging.DEBUG if args.debug else logging.INFO, secrets=[args.api_key])
    return serve_forever(
        port=args.port, api_key=args.api_key, new_item_interval=args.interval, seed=args.seed
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from trigger_engine.sandbox.demo import run_demo

    logs.setup(level=logging.DEBUG if args.debug else logging.WARNING)
    return run_demo(args.duration)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "check": cmd_check,
    "db": cmd_db,
    "status": cmd_status,
    "events": cmd_events,
    "replay": cmd_replay,
    "sinks": cmd_sinks,
    "triggers": cmd_triggers,
    "backfill": cmd_backfill,
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
