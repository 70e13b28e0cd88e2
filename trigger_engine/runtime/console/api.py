"""The admin API under ``/api/v1/``: what the CLI offers (status, events with the same
filters and search, one event with its attempts, replay, sinks pause/resume/enable,
triggers pause/resume/retry, a test event), as JSON, on the daemon's own aiohttp server.

Every handler calls the store's repositories (the CLI's functions) in a thread
(:func:`~trigger_engine.threads.in_daemon_thread`), never on the event loop. The JSON is
:mod:`trigger_engine.runtime.views`' (the CLI's ``--json``), so no API key, sink secret or
header value can appear in it: sink URLs are shown without query or credentials. Access
(token, session, CSRF, headers) is :mod:`trigger_engine.runtime.console.security`'s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import aiohttp
from aiohttp import web

from trigger_engine.clock import isoformat_z
from trigger_engine.config import Config
from trigger_engine.core import registry
from trigger_engine.core.filters import build_filter
from trigger_engine.core.words import did_you_mean
from trigger_engine.db.store import Store
from trigger_engine.errors import UsageError
from trigger_engine.ops.logs import get_logger
from trigger_engine.runtime import views
from trigger_engine.runtime.check import send_test_event
from trigger_engine.states import DELIVERY_STATUSES, ENGINE_EVENT_TYPES, EVENT_STATUSES, QUARANTINED
from trigger_engine.threads import in_daemon_thread
from trigger_engine.types import EventFilter, EventView, QuarantineView

log = get_logger("trigger_engine.console")

PREFIX = "/api/v1"
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
# How old the sinks' delivered counts in the status may be, in seconds: counting them reads
# every delivered row (most of a second at a million), so the overview, polled every 5 s by
# each open page, reads them at most this often; the other counts are always exact.
DELIVERED_MAX_AGE = 60.0

# The query parameters of GET /api/v1/events that may repeat (the CLI's repeatable options).
_LISTS = ("type", "account", "status", "sink")


class ApiError(Exception):
    """A request the API refuses: the HTTP status and one sentence."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def refuse_nul(name: str, value: str) -> None:
    """A NUL character is no name, id, time or search text (and PostgreSQL refuses it)."""
    if "\x00" in value:
        raise ApiError(400, f"{name} contains a NUL character")


def error_response(status: int, message: str) -> web.Response:
    """``{"error": "..."}`` with ``status``."""
    return web.json_response({"error": message}, status=status)


class AdminApi:
    """The handlers, bound to the daemon's (current) configuration and store."""

    def __init__(
        self,
        config: Callable[[], Config],
        store: Store,
        *,
        clock: Callable[[], datetime],
    ) -> None:
        self._config = config
        self.store = store
        self.clock = clock

    def add_routes(self, app: web.Application) -> None:
        """Mount every route of the API on ``app`` (see :mod:`.openapi`)."""
        r = app.router
        r.add_get(f"{PREFIX}/status", self.status)
        r.add_get(f"{PREFIX}/events", self.events)
        r.add_get(f"{PREFIX}/events/{{event_id}}", self.event)
        r.add_post(f"{PREFIX}/replay", self.replay)
        for action in ("pause", "resume", "enable"):
            r.add_post(f"{PREFIX}/sinks/{{name}}/{action}", self.sink_action)
        r.add_post(f"{PREFIX}/sinks/{{name}}/test", self.sink_test)
        for action in ("pause", "resume", "retry"):
            r.add_post(f"{PREFIX}/triggers/{{account}}/{{trigger}}/{action}", self.trigger_action)

    # ------------------------------------------------------------------ reading

    def status_doc(self) -> dict[str, Any]:
        """``status --json``: triggers, sinks and nodes (in a thread: it reads the store)."""
        config = self._config()
        moment = self.clock()
        node_views = self.store.nodes.views(moment)
        doc = views.status_dict(
            config,
            self.store.polls.states(),
            self.store.sinks.stats(delivered=DELIVERED_MAX_AGE),
            moment,
            quarantined=self.store.quarantine.counts(),
            serving=registry.serving(node_views, moment),
        )
        doc["nodes"] = views.node_dicts(node_views, moment, config)
        return doc

    async def status(self, _request: web.Request) -> web.Response:
        """GET /status."""
        return web.json_response(await in_daemon_thread(self.status_doc))

    def event_filter(
        self,
        query: Mapping[str, str],
        lists: Mapping[str, list[str]],
        *,
        quarantined: bool = False,
    ) -> EventFilter:
        """The CLI's filter from query parameters (same checks, same sentences);
        ``quarantined``: the status ``quarantined`` is allowed too (``events``)."""
        config = self._config()
        known_accounts = [a.name for a in config.accounts]
        for name in lists["account"]:
            if name not in known_accounts:
                raise ApiError(
                    400, f"no account named '{name}'{did_you_mean(name, known_accounts)}"
                )
        try:
            return build_filter(
                now=self.clock(),
                since=query.get("since") or None,
                until=query.get("until") or None,
                types=tuple(lists["type"]),
                accounts=tuple(lists["account"]),
                statuses=tuple(lists["status"]),
                sinks=tuple(lists["sink"]),
                item_key=query.get("key") or None,
                allowed_statuses=EVENT_STATUSES if quarantined else DELIVERY_STATUSES,
            )
        except UsageError as exc:
            raise ApiError(400, str(exc).replace("--", "")) from None

    def _check_types(self, given: list[str]) -> None:
        config = self._config()
        known = {t.event for t in config.triggers.values()} | set(ENGINE_EVENT_TYPES)
        if all(t in known for t in given):
            return
        known |= set(self.store.events.types())
        for name in given:
            if name not in known:
                raise ApiError(
                    400, f"'{name}' is not an event type{did_you_mean(name, sorted(known))}"
                )

    def events_page(
        self, query: Mapping[str, str], lists: Mapping[str, list[str]]
    ) -> dict[str, Any]:
        """One page of events, newest first, and the cursor of the next (in a thread).

        The status ``quarantined`` selects as ``events --status quarantined`` does: the
        items polls set aside, in ``quarantined`` (on the first page only; none with a
        ``sink`` or a ``search``: they have no delivery and no stored payload); with no
        other status, no events."""
        limit = _int(query.get("limit"), "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        selection = self.event_filter(query, lists, quarantined=True)
        self._check_types(lists["type"])
        statuses = set(selection.statuses)
        held: list[QuarantineView] = []
        cursor = query.get("cursor") or None
        if cursor is not None:
            if self.store.events.missing([cursor]):
                raise ApiError(400, f"cursor '{cursor}' is not an event id")
            selection = dataclasses.replace(selection, before=cursor)
        search = query.get("search")
        if QUARANTINED in statuses:
            statuses.discard(QUARANTINED)
            if cursor is None and not search and not lists["sink"]:
                held = self.store.quarantine.list(
                    selection, triggers=self._event_types(), limit=limit
                )
            if not statuses:  # only quarantined items asked for
                return _events_doc([], None, None, held, self._event_types())
            selection = dataclasses.replace(
                selection, statuses=tuple(s for s in selection.statuses if s in statuses)
            )
        page = self.store.events.page(selection, limit=limit, search=search or None)
        doc = _events_doc(page.events, page.next_cursor, page.bounded_at, held, self._event_types())
        doc["scanned_to"] = None if page.scanned_to is None else isoformat_z(page.scanned_to)
        return doc

    def _event_types(self) -> dict[str, str]:
        return {name: t.event for name, t in self._config().triggers.items()}

    async def events(self, request: web.Request) -> web.Response:
        """GET /events."""
        query = request.query
        for name, value in query.items():
            refuse_nul(name, value)
        for name in query:
            if name not in {*_LISTS, "since", "until", "search", "key", "limit", "cursor"}:
                raise ApiError(400, f"unknown query parameter '{name}'")
        lists = {name: [v for v in query.getall(name, []) if v] for name in _LISTS}
        single = {k: query[k] for k in query if k not in _LISTS}
        return web.json_response(await in_daemon_thread(self.events_page, single, lists))

    async def event(self, request: web.Request) -> web.Response:
        """GET /events/{id}: ``events show ID --json``."""
        event_id = request.match_info["event_id"]
        refuse_nul("the event id", event_id)
        detail = await in_daemon_thread(self.store.events.detail, event_id)
        if detail is None:
            raise ApiError(404, f"no event {event_id}")
        return web.Response(
            text=views.exact_json(views.event_detail_dict(detail)),  # big integers too
            content_type="application/json",
        )

    # ------------------------------------------------------------------ changing

    def replay_doc(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``replay`` with the CLI's selection (in a thread)."""
        allowed = {"event", "since", "until", "type", "account", "status", "sink", "dry_run"}
        for name in body:
            if name not in allowed:
                raise ApiError(400, f"unknown field '{name}' (known: {', '.join(sorted(allowed))})")
        lists = {name: _strings(body, name) for name in (*_LISTS, "event")}
        dry_run = body.get("dry_run", False)
        if not isinstance(dry_run, bool):
            raise ApiError(400, "dry_run must be true or false")
        single = {k: body[k] for k in ("since", "until") if body.get(k) is not None}
        for k, v in single.items():
            if not isinstance(v, str):
                raise ApiError(400, f"{k} must be a string (a duration like '2h' or a time)")
            refuse_nul(k, v)
        if not lists["event"] and not single.get("since"):
            raise ApiError(400, "replay needs event (a list of event ids) or since")
        selection = dataclasses.replace(
            self.event_filter(single, lists),
            event_ids=tuple(lists["event"]),
        )
        self._check_types(lists["type"])
        missing = self.store.events.missing(lists["event"])
        if missing:
            raise ApiError(404, f"no event {', '.join(missing)}")
        config = self._config()
        moment = self.clock()
        serving = registry.serving(self.store.nodes.live(moment), moment)
        known = {s.name for s in config.sinks} | set(serving)
        for name in lists["sink"]:
            if name not in known and not self.store.sinks.stored(name):
                raise ApiError(404, f"no sink named '{name}'{did_you_mean(name, sorted(known))}")
        result = self.store.deliveries.replay(
            selection, known_sinks=known, now=moment, dry_run=dry_run
        )
        if not dry_run and result.queued:
            log.info("replay.queued", events=result.events, deliveries=result.queued, by="api")
        return {"dry_run": dry_run, **dataclasses.asdict(result)}

    async def replay(self, request: web.Request) -> web.Response:
        """POST /replay."""
        body = await _json_body(request)
        return web.json_response(await in_daemon_thread(self.replay_doc, body))

    def _sink(self, name: str) -> None:
        known = [s.name for s in self._config().sinks]
        if name not in known:
            raise ApiError(404, f"no sink named '{name}'{did_you_mean(name, known)}")

    def sink_change(self, name: str, action: str, *, by: str = "admin API") -> dict[str, Any]:
        """``sinks pause|resume|enable NAME`` (in a thread): what it held or released."""
        self._sink(name)
        moment = self.clock()
        if action == "enable":
            done = self.store.sinks.set_enabled(name, True, reason="", now=moment)
        else:
            done = self.store.sinks.set_paused(
                name, action == "pause", reason="paused by hand", now=moment
            )
        log.info(
            f"sink.{action}d" if action != "pause" else "sink.paused",
            sink=name,
            held=done.held,
            released=done.released,
            reason=f"by hand ({by})",
        )
        return {"action": action, **dataclasses.asdict(done)}

    async def sink_action(self, request: web.Request) -> web.Response:
        """POST /sinks/{name}/pause|resume|enable."""
        name, action = request.match_info["name"], _last_segment(request)
        return web.json_response(await in_daemon_thread(self.sink_change, name, action))

    async def sink_test_doc(self, name: str) -> dict[str, Any]:
        """One signed ``engine.test`` event to sink ``name``, as ``check`` sends."""
        self._sink(name)
        sink = self._config().sink(name)
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
            sent = await send_test_event(session, sink, self.clock)
        return dataclasses.asdict(sent)

    async def sink_test(self, request: web.Request) -> web.Response:
        """POST /sinks/{name}/test: one signed ``engine.test`` event, as ``check`` sends."""
        return web.json_response(await self.sink_test_doc(request.match_info["name"]))

    async def trigger_action(self, request: web.Request) -> web.Response:
        """POST /triggers/{account}/{trigger}/pause|resume|retry."""
        account = request.match_info["account"]
        trigger = request.match_info["trigger"]
        action = _last_segment(request)
        return web.json_response(
            await in_daemon_thread(self.trigger_change, account, trigger, action)
        )

    def trigger_change(self, account: str, trigger: str, action: str) -> dict[str, Any]:
        """``triggers pause|resume|retry ACCOUNT/TRIGGER`` (in a thread)."""
        config = self._config()
        accounts = [a.name for a in config.accounts]
        if account not in accounts:
            raise ApiError(404, f"no account named '{account}'{did_you_mean(account, accounts)}")
        if trigger not in config.triggers:
            raise ApiError(
                404, f"no trigger named '{trigger}'{did_you_mean(trigger, list(config.triggers))}"
            )

        doc: dict[str, Any] = {"account": account, "trigger": trigger, "action": action}
        if action != "retry":
            self.store.polls.set_paused(
                account, trigger, paused=action == "pause", reason="paused by hand"
            )
            doc["paused"] = action == "pause"
            return doc
        before = self.store.polls.clear_backoff(account, trigger)
        if before is not None and before.paused:
            raise ApiError(
                409,
                f"{account}/{trigger} is paused ({before.paused_reason or 'by hand'}): "
                "resume it first",
            )
        backing_off = (
            before is not None
            and before.backoff_until is not None
            and before.backoff_until > self.clock()
        )
        doc["cleared"] = backing_off
        doc["backoff_until"] = (
            isoformat_z(before.backoff_until)
            if backing_off and before is not None and before.backoff_until
            else None
        )
        return doc


def _events_doc(
    found: list[EventView],
    next_cursor: str | None,
    bounded_at: int | None,
    held: list[QuarantineView],
    event_types: Mapping[str, str],
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "events": [views.event_dict(e) for e in found],
        "next_cursor": next_cursor,
        "search_bounded_at": bounded_at,
    }
    if held:
        doc["quarantined"] = [
            views.quarantined_dict(q, event_types.get(q.trigger, q.trigger)) for q in held
        ]
    return doc


def _last_segment(request: web.Request) -> str:
    """The action a route names last (``/sinks/{name}/pause``: ``pause``)."""
    return request.path.rsplit("/", 1)[1]


def _int(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ApiError(400, f"{name} must be an integer from {low} to {high}")
    return int(raw)


def _strings(body: Mapping[str, Any], name: str) -> list[str]:
    value = body.get(name)
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        for v in value:
            refuse_nul(name, v)
        return list(value)
    raise ApiError(400, f"{name} must be a string or a list of strings")


async def _json_body(request: web.Request) -> Mapping[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body
