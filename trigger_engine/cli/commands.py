"""One function per command: load the config, call the engine, print the answer.

Each returns the exit code (0 success, 1 a runtime failure); usage and config problems
raise :class:`~trigger_engine.errors.UsageError` / ``ConfigError`` (exit 2), which
:func:`trigger_engine.cli.main.main` turns into one sentence. What is printed is built by
:mod:`trigger_engine.cli.render` (its text comes escaped); a line composed here is printed by
:func:`_say`, which escapes it. The work itself lives in the engine's modules.

Start-up is part of every command's cost (cron runs them): this module imports only what the
commands that read and change the database share (the configuration, the store, the views).
A command that needs more (the daemon, the HTTP clients, the scheduler, the simulator)
imports it in its own function, so ``status`` or ``events`` never load aiohttp or httpx.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from dataclasses import replace

import orjson

from trigger_engine.cli import render
from trigger_engine.cli.progress import progress
from trigger_engine.clock import isoformat_z, now
from trigger_engine.config import Config, find_config_path, load_config
from trigger_engine.config.shape import served_sinks
from trigger_engine.core import registry
from trigger_engine.core.engine_events import Subscribers
from trigger_engine.core.escape import escape_controls
from trigger_engine.core.filters import build_filter
from trigger_engine.core.signing import new_secret
from trigger_engine.core.words import did_you_mean, plural
from trigger_engine.db.store import Store
from trigger_engine.errors import RuntimeFailure, UsageError
from trigger_engine.ops import logs
from trigger_engine.ops.logs import get_logger
from trigger_engine.runtime import views as json_views
from trigger_engine.states import DELIVERY_STATUSES, ENGINE_EVENT_TYPES, EVENT_STATUSES, QUARANTINED
from trigger_engine.types import EventFilter, EventView, QuarantineView, SinkChange

log = get_logger("trigger_engine.cli")


def _load(args: argparse.Namespace) -> Config:
    """The configuration the command names, with logging set up from it."""
    config = load_config(find_config_path(args.config, os.environ))
    logs.setup(
        level=logging.DEBUG if args.debug else logging.INFO,
        json_lines=config.engine.log_format == "json",
        secrets=config.secrets(),
    )
    return config


def _open(config: Config, *, pool_size: int | None = None) -> Store:
    store = Store.open(config.database_url(), pool_size=pool_size)
    own = Subscribers(served_sinks(config))
    store.set_subscribers(lambda: own)  # the engine events a command causes go to these
    return store


def _subscribe_live_nodes(config: Config, store: Store) -> None:
    """The engine events this command causes go to the sinks of ``config`` and to those
    the live nodes serve (PostgreSQL; on SQLite the one daemon serves this config)."""
    if store.dialect == "sqlite":
        return
    moment = now()
    remote = registry.served_by_live(store.nodes.live(moment), moment)
    both = Subscribers(served_sinks(config), remote)
    store.set_subscribers(lambda: both)


def _say(line: str) -> None:
    """Print one line of text, control characters escaped: it may quote what others wrote."""
    print(escape_controls(line))


def _print_json(value: object) -> None:
    print(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def _check_names(config: Config, kind: str, given: Sequence[str], known: Sequence[str]) -> None:
    for name in given:
        if name not in known:
            raise UsageError(
                f"no {kind} named '{name}' in {config.path or 'the configuration'}"
                f"{did_you_mean(name, known)} (known: {', '.join(known) or 'none'})"
            )


def _check_types(config: Config, store: Store, given: Sequence[str]) -> None:
    """Each of ``given`` must be an event type: a configured trigger's, the engine's own
    (``engine.*``) or one stored (a removed trigger's); else exit 2 with a "did you mean".
    The stored types are read only when a type is not known otherwise."""
    known = {t.event for t in config.triggers.values()} | set(ENGINE_EVENT_TYPES)
    unknown = [t for t in given if t not in known]
    if not unknown:
        return
    known |= set(store.events.types())
    for name in unknown:
        if name not in known:
            raise UsageError(
                f"--type '{name}' is not an event type of {config.path or 'the configuration'}"
                f" or the database{did_you_mean(name, known)} (known: {', '.join(sorted(known))})"
            )


def _check_events_exist(store: Store, event_ids: Sequence[str]) -> None:
    """Each of ``event_ids`` must name a stored event; else exit 1 naming those that do not."""
    missing = store.events.missing(event_ids)
    if missing:
        names = ", ".join(missing)
        raise RuntimeFailure(f"no event {names}" if len(missing) == 1 else f"no events {names}")


def _check_sinks(config: Config, store: Store, given: Sequence[str]) -> dict[str, list[str]]:
    """Each of ``given`` must name a sink that is configured, served by a live node, or
    stored (a removed sink with deliveries); else exit 2 with a "did you mean". Returns
    the sinks live nodes serve, with the nodes (read once)."""
    moment = now()
    serving = registry.serving(store.nodes.live(moment), moment)
    known = {s.name for s in config.sinks} | set(serving)
    for name in given:
        if name in known or store.sinks.stored(name):
            continue
        names = sorted(known | set(store.sinks.stored_names()))
        hint = did_you_mean(name, names)
        raise UsageError(
            f"no sink named '{name}' in {config.path or 'the configuration'}, on a live "
            f"node or in the database{hint} (known: {', '.join(names) or 'none'})"
        )
    return serving


def _filter(
    args: argparse.Namespace,
    config: Config,
    *,
    event_ids: tuple[str, ...] = (),
    sinks: tuple[str, ...] = (),
    item_key: str | None = None,
    allowed_statuses: tuple[str, ...] = DELIVERY_STATUSES,
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
        allowed_statuses=allowed_statuses,
    )


def cmd_run(args: argparse.Namespace) -> int:
    """``run``: the daemon until a signal; ``run --once``: poll all, deliver what is due.

    The daemon takes the process's signals before anything else (``main`` already did,
    before the imports): a stop before it serves ends the start at the next step, exit 0."""
    if args.strict and not args.once:
        raise UsageError("--strict goes with 'run --once' (the daemon has no run to fail)")
    import asyncio

    from trigger_engine.cli.startup import importing_without_gc

    with importing_without_gc("trigger_engine.runtime.daemon"):  # aiohttp, httpx
        from trigger_engine.polling.source import Source
        from trigger_engine.runtime import plan
        from trigger_engine.runtime.daemon import Daemon
    from trigger_engine.runtime.signals import process_signals

    signals = None if args.once else process_signals()
    config = _load(args)
    if signals is not None:
        signals.grace = config.engine.shutdown_grace
        if signals.stop_requested:  # before the database is even opened
            logs.get_logger("trigger_engine.daemon").info("engine.stopped", before="serving")
            return 0
    with _open(config, pool_size=plan.pool_size(config)) as store:
        store.lock_single_node()
        with Source(config.source) as source:
            path = config.path
            daemon = Daemon(
                config,
                store,
                source,
                reload=None if path is None else (lambda: load_config(path)),
            )
            if signals is not None:
                asyncio.run(daemon.run(signals=signals))
                return 0
            with progress() as report_progress:
                report = asyncio.run(daemon.run_once(progress=report_progress))
    print(render.once_text(report.polls, report.delivery))
    if not report.ok:
        return 1
    failed = report.delivery.failed + report.delivery.dead
    if args.strict and failed:
        _say(f"--strict: {plural(failed, 'delivery attempt')} failed: exit 1")
        return 1
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """``check``: the configuration is valid; each account's enabled triggers answer their
    first page with keyed items; each sink (unless ``--no-sinks``) takes a signed
    ``engine.test`` event. Exit 0 only if all pass."""
    from trigger_engine.runtime.check import run_check

    config = _load(args)
    report = run_check(config, sinks=not args.no_sinks)
    if args.json:
        _print_json(render.check_dict(report))
    else:
        print(render.check_text(report))
    return 0 if report.ok else 1


def cmd_db(args: argparse.Namespace) -> int:
    """``db upgrade``: apply the migrations."""
    config = _load(args)
    _open(config).close()
    _say("database is up to date")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """``status``: triggers, nodes and sinks."""
    config = _load(args)
    with _open(config) as store:
        moment = now()
        views = store.nodes.views(moment)
        doc = json_views.status_dict(
            config,
            store.polls.states(),
            store.sinks.stats(),
            moment,
            quarantined=store.quarantine.counts(),
            serving=registry.serving(views, moment),
        )
        doc["nodes"] = json_views.node_dicts(views, moment, config)
    if args.json:
        _print_json(doc)
    else:
        print(render.status_text(doc))
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    """``events``: events, newest first, with their deliveries; ``--status quarantined``
    lists the items their polls set aside, with the reason; ``--search TEXT`` only those
    whose payload contains TEXT; ``events show ID``: one event in full."""
    config = _load(args)
    if args.action == "show":
        return _show_event(args, config)
    if args.event_id is not None:
        raise UsageError(f"say 'events show {args.event_id}' to see one event")
    selection = _filter(
        args,
        config,
        item_key=args.key,
        sinks=tuple(args.sink),
        allowed_statuses=EVENT_STATUSES,
    )
    statuses = set(selection.statuses)
    event_types = {name: trigger.event for name, trigger in config.triggers.items()}
    found: list[EventView] = []
    held: list[QuarantineView] = []
    bounded_at: int | None = None
    indexed = False
    with _open(config) as store:
        _check_sinks(config, store, args.sink)
        _check_types(config, store, args.type)
        if args.search is not None:  # a quarantined item has no payload stored to search
            statuses.discard(QUARANTINED)
            if statuses or not selection.statuses:
                only = replace(selection, statuses=tuple(statuses & set(selection.statuses)))
                page = store.events.search(only, args.search, limit=args.limit)
                found, bounded_at, indexed = page.events, page.bounded_at, page.indexed
            statuses = set()
        if QUARANTINED in statuses:
            if not args.sink:  # an item set aside has no delivery, so no sink
                held = store.quarantine.list(selection, triggers=event_types, limit=args.limit)
            statuses.discard(QUARANTINED)
        if args.search is None and (statuses or not selection.statuses):
            only = replace(
                selection, statuses=tuple(s for s in selection.statuses if s in statuses)
            )
            found = store.events.list(only, limit=args.limit)
    if args.json:
        _print_json(
            [json_views.quarantined_dict(q, event_types.get(q.trigger, q.trigger)) for q in held]
            + [json_views.event_dict(e) for e in found]
        )
    else:
        for q in held:
            print(render.quarantined_line(q, event_types.get(q.trigger, q.trigger)))
        for e in found:
            print(render.event_line(e))
        if not found and not held:
            _say("no events match")
    if bounded_at is not None and indexed:
        log.warning(
            "events.search_bounded",
            searched=f"the indexed events and the newest {bounded_at} of those not indexed yet",
            why="more events wait for the search indexer (it catches up in the background)",
        )
    elif bounded_at is not None:
        log.warning(
            "events.search_bounded",
            searched=f"the newest {bounded_at} events",
            why="no index serves this search (a term under 3 characters, or the database "
            "has no trigram index)",
        )
    return 0


def _show_event(args: argparse.Namespace, config: Config) -> int:
    """``events show ID``: the event's payload and every delivery with every attempt."""
    if args.event_id is None:
        raise UsageError("'events show' needs an event ID (see 'trigger-engine events')")
    others = [
        option
        for option, given in (
            ("--search", args.search is not None),
            ("--type", args.type),
            ("--account", args.account),
            ("--since", args.since),
            ("--until", args.until),
            ("--status", args.status),
            ("--sink", args.sink),
            ("--key", args.key is not None),
        )
        if given
    ]
    if others:
        raise UsageError(f"'events show ID' takes no filter ({', '.join(others)})")
    with _open(config) as store:
        detail = store.events.detail(args.event_id)
    if detail is None:
        raise RuntimeFailure(f"no event {args.event_id}")
    if args.json:
        print(json_views.exact_json(json_views.event_detail_dict(detail)))  # big integers too
    else:
        print(render.event_detail_text(detail))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """``replay``: queue the selected deliveries again, with the same webhook-id."""
    config = _load(args)
    if not args.event and not args.since:
        raise UsageError(
            "replay needs --event ID or --since TIME (see 'trigger-engine replay --help')"
        )
    if QUARANTINED in args.status:
        raise UsageError(
            "--status quarantined: quarantined items have no deliveries to replay; every poll "
            "that lists them tries them again (see 'trigger-engine events --status quarantined')"
        )
    selection = _filter(args, config, event_ids=tuple(args.event), sinks=tuple(args.sink))
    with _open(config) as store:
        serving = _check_sinks(config, store, args.sink)
        _check_types(config, store, args.type)
        _check_events_exist(store, args.event)
        # a sink that another live node serves is known: that node sends what is queued
        known = {s.name for s in config.sinks} | set(serving)
        with progress() as report_progress:
            report_progress("replay", 0, None)  # one transaction: a spinner while it runs
            result = store.deliveries.replay(
                selection, known_sinks=known, now=now(), dry_run=args.dry_run
            )
            report_progress("replay", 1, 1)
    print(render.replay_text(result, dry_run=args.dry_run, by_event=bool(args.event)))
    return 0


_SINK_EVENTS = {
    "pause": "sink.paused",
    "resume": "sink.resumed",
    "enable": "sink.enabled",
    "disable": "sink.disabled",
}


def _log_sink_change(action: str, change: SinkChange) -> None:
    """One log line per sink change by hand (``sink.disabled`` is where an operational
    event about a disabled sink hooks on, as is the dispatcher's for a 410)."""
    log.info(
        _SINK_EVENTS[action],
        sink=change.sink,
        held=change.held,
        released=change.released,
        in_flight=change.in_flight,
        paused=change.paused,
        disabled=change.disabled,
        reason="by hand",
    )


def cmd_sinks(args: argparse.Namespace) -> int:
    """``sinks``: list them; ``sinks pause|resume|enable|disable NAME``; ``sinks drop NAME
    [--to OTHER] [--dry-run]`` for a sink removed from the configuration; ``sinks secret``
    prints a new signing secret (no configuration needed)."""
    if args.action == "secret":
        if args.name or args.to is not None or args.dry_run:
            raise UsageError("'sinks secret' takes no NAME or option: it prints a new secret")
        print(new_secret())
        return 0
    config = _load(args)
    if args.action and not args.name:
        raise UsageError(f"'sinks {args.action}' needs a sink NAME")
    if args.name and not args.action:
        raise UsageError(
            "say 'sinks pause NAME', 'sinks resume NAME', 'sinks enable NAME', "
            "'sinks disable NAME' or 'sinks drop NAME'"
        )
    if args.action != "drop" and (args.to is not None or args.dry_run):
        raise UsageError("--to and --dry-run go with 'sinks drop NAME'")
    with _open(config) as store:
        if args.action == "drop":
            return _drop_sink(config, store, args.name, to=args.to, dry_run=args.dry_run)
        if args.action:
            _check_names(config, "sink", [args.name], [s.name for s in config.sinks])
            _subscribe_live_nodes(config, store)  # disabling writes engine.sink_disabled
            if args.action in ("pause", "resume"):
                change = store.sinks.set_paused(
                    args.name, args.action == "pause", reason="paused by hand", now=now()
                )
            else:
                change = store.sinks.set_enabled(
                    args.name, args.action == "enable", reason="disabled by hand", now=now()
                )
            _log_sink_change(args.action, change)
            print(render.sink_change_text(args.action, change))
            return 0
        moment = now()
        serving = registry.serving(store.nodes.live(moment), moment)
        rows = json_views.sink_dicts(config, store.sinks.stats(), moment, serving)
    for s in rows:
        print(render.sink_line(s))
    if not rows:
        _say("no sinks configured")
    return 0


def _drop_sink(config: Config, store: Store, name: str, *, to: str | None, dry_run: bool) -> int:
    """``sinks drop NAME [--to OTHER] [--dry-run]``: the waiting deliveries of a sink that
    no configuration serves any more are deleted, or first queued to OTHER."""
    where = config.path or "the configuration"
    configured = [s.name for s in config.sinks]
    if name in configured:
        raise UsageError(
            f"sink '{name}' is configured in {where}: 'sinks drop' is for a sink removed from "
            f"the configuration (remove its [[sinks]] table from every node first, or stop "
            f"its deliveries with 'trigger-engine sinks disable {name}')"
        )
    _check_sinks(config, store, [name])
    if to is not None:
        _check_names(config, "sink", [to], configured)
        if to in store.sinks.disabled():
            raise RuntimeFailure(
                f"sink '{to}' is disabled: enable it first ('trigger-engine sinks enable {to}') "
                f"or name another sink with --to"
            )
    result = store.deliveries.drop_sink(name, to=to, now=now(), dry_run=dry_run)
    if result.served_by:
        raise RuntimeFailure(
            f"sink '{name}' is still served by live node{'s' if len(result.served_by) > 1 else ''} "
            f"{', '.join(result.served_by)}: remove it from their configuration (and reload "
            f"them) first; its deliveries are theirs to send until then"
        )
    if result.total and not dry_run:
        log.info(
            "sink.dropped",
            sink=name,
            deliveries=result.total,
            to=to,
            queued=result.queued,
        )
    print(render.drop_text(result, dry_run=dry_run))
    return 0


def cmd_triggers(args: argparse.Namespace) -> int:
    """``triggers``: list them; ``triggers pause|resume ACCOUNT TRIGGER``."""
    config = _load(args)
    if args.action and not (args.account and args.trigger):
        raise UsageError(f"'triggers {args.action}' needs ACCOUNT and TRIGGER")
    with _open(config) as store:
        if args.action:
            _check_names(config, "account", [args.account], [a.name for a in config.accounts])
            _check_names(config, "trigger", [args.trigger], list(config.triggers))
            if args.action == "retry":
                return _retry_trigger(store, args.account, args.trigger)
            paused = args.action == "pause"
            store.polls.set_paused(
                args.account, args.trigger, paused=paused, reason="paused by hand"
            )
            _say(
                f"{args.account}/{args.trigger} {args.action}d"
                + ("; what it has seen is kept" if paused else "")
            )
            return 0
        rows = json_views.trigger_rows(config, store.polls.states())
    moment = now()
    for row in rows:
        print(row.line(moment))
    return 0


def _retry_trigger(store: Store, account: str, trigger: str) -> int:
    """``triggers retry ACCOUNT TRIGGER``: clear its backoff so it is polled at once."""
    before = store.polls.clear_backoff(account, trigger)
    where = f"{account}/{trigger}"
    if before is not None and before.paused:
        _say(
            f"{where} is paused ({before.paused_reason or 'by hand'}): resume it with "
            f"'trigger-engine triggers resume {account} {trigger}'"
        )
        return 1
    if before is None or before.backoff_until is None or before.backoff_until <= now():
        _say(f"{where} is not backing off: it is polled at its next turn")
        return 0
    _say(
        f"{where}: backoff cleared (it was backing off until "
        f"{isoformat_z(before.backoff_until)} after "
        f"{plural(before.consecutive_failures, 'failed poll')}); a running daemon polls it "
        "within seconds, 'trigger-engine run --once' polls it now"
    )
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    """``backfill``: fire, once, what a seeding first poll only remembered."""
    from trigger_engine.polling.backfill import backfill
    from trigger_engine.polling.source import Source

    config = _load(args)
    _check_names(config, "trigger", args.trigger, list(config.triggers))
    _check_names(config, "account", args.account, [a.name for a in config.accounts])
    failed = False
    total = len(args.account or config.accounts) * len(
        [t for name, t in config.triggers.items() if not args.trigger or name in args.trigger]
    )
    done = 0
    with _open(config) as store, Source(config.source) as source, progress() as report_progress:
        report_progress("triggers backfilled", done, total)
        for step in backfill(
            config,
            store,
            source,
            accounts=args.account,
            triggers=args.trigger,
            dry_run=args.dry_run,
            clock=now,
        ):
            failed = failed or step.error is not None
            print(render.backfill_line(step, dry_run=args.dry_run))
            done += 1
            report_progress("triggers backfilled", done, max(total, done))
    if not args.dry_run:
        _say("deliveries are sent by the running daemon, or by 'trigger-engine run --once'")
    return 1 if failed else 0


def cmd_simulator(args: argparse.Namespace) -> int:
    """``simulator``: serve the embedded Meet Alfred API until Ctrl-C."""
    from trigger_engine.sandbox import serve_forever

    logs.setup(level=logging.DEBUG if args.debug else logging.INFO, secrets=[args.api_key])
    return serve_forever(
        port=args.port, api_key=args.api_key, new_item_interval=args.interval, seed=args.seed
    )


def cmd_demo(args: argparse.Namespace) -> int:
    """``demo``: simulator, engine and a verifying receiver in one process."""
    from trigger_engine.sandbox.demo import run_demo

    logs.setup(level=logging.DEBUG if args.debug else logging.WARNING)
    return run_demo(args.duration)
