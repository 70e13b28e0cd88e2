"""The web console's pages, server-rendered HTML on the daemon's aiohttp server:
``/login``, ``/logout``, ``/`` (overview), ``/events``, ``/events/{id}``, ``/deliveries``
and the actions as POST forms.

The pages call the admin API's functions (:class:`~.api.AdminApi`: ``status_doc``,
``events_page``, ``replay_doc``, ``sink_change``, ``sink_test_doc``, ``trigger_change``),
never its HTTP handlers, so they show and do exactly what the API (and the CLI) does.
Every value is HTML-escaped (:func:`e`); no inline script or style (the CSP is
``default-src 'self'``): the CSS and the small script that keeps the overview, the events
list and an event's page current are files under ``static/``. The pages work without it.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from trigger_engine.db.events import PAGE_SCAN
from trigger_engine.runtime import views
from trigger_engine.runtime.console.api import _LISTS, DELIVERED_MAX_AGE, AdminApi, ApiError
from trigger_engine.runtime.console.security import CSRF_FIELD, SESSION_COOKIE, Access
from trigger_engine.threads import in_daemon_thread

STATIC = Path(__file__).parent / "static"
_SINK_COLUMNS = ("pending", "failed", "held", "dead", "delivered")


def e(value: Any) -> str:
    """``value`` as HTML text (``None``: a dash)."""
    return "&mdash;" if value is None else html.escape(str(value), quote=True)


def is_public(request: web.Request) -> bool:
    """The login page and the static files need no token."""
    return request.path == "/login" or request.path.startswith("/static/")


def page(
    title: str,
    body: str,
    *,
    status: int = 200,
    flash: str | None = None,
    csrf: str | None = None,
) -> web.Response:
    """A whole HTML page; with ``csrf`` (a logged-in page), the Log out button."""
    message = f'<p class="flash" role="status">{e(flash)}</p>' if flash else ""
    logout = (
        '<form method="post" action="/logout" class="logout">'
        f'<input type="hidden" name="{CSRF_FIELD}" value="{e(csrf)}">'
        "<button>Log out</button></form>"
        if csrf
        else ""
    )
    text = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(title)} · trigger-engine</title>"
        '<link rel="stylesheet" href="/static/console.css">'
        '<script src="/static/console.js" defer></script></head><body>'
        '<header><a href="/">overview</a> <a href="/events">events</a> '
        '<a href="/deliveries">dead and held</a>'
        '<span id="reachability" role="alert" hidden>daemon unreachable</span>'
        f"{logout}</header>"
        f"<main><h1>{e(title)}</h1>{message}{body}</main></body></html>"
    )
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def refused(status: int, message: str) -> web.Response:
    """A page turned away: the sentence and a link to log in, nothing else."""
    title = {401: "Unauthorized", 404: "Not found"}.get(status, "Refused")
    login = "" if status == 404 else '<p><a href="/login">Log in</a></p>'
    return page(title, f"<p>{e(message)}</p>{login}", status=status)


def _table(headers: Iterable[str], rows: Iterable[str], *, attrs: str = "") -> str:
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join(rows)
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# What the events page's filter boxes take.
_HINTS = {
    "status": ' placeholder="pending, failed, held, dead, delivered or quarantined"',
    "since": ' placeholder="2h or 2026-12-01T10:00Z"',
    "until": ' placeholder="a duration or a time"',
}


def _quarantined_table(items: list[dict[str, Any]]) -> str:
    """The items polls set aside (``status=quarantined``), with the reason."""
    if not items:
        return ""
    rows = [
        f"<tr><td>{e(q['account'])}/{e(q['trigger'])}</td><td>{e(q['key'])}</td>"
        f'<td class="wrap">{e(q["reason"])}</td><td>{e(q["created_at"])}</td>'
        f"<td>{e(q['last_seen_at'])}</td>"
        f"<td>{e(q['polls'])}</td></tr>"
        for q in items
    ]
    return "<h2>Quarantined items</h2>" + _table(
        ("trigger", "key", "reason", "first seen", "last seen", "polls"), rows
    )


class Pages:
    """The console's handlers, on the admin API's functions."""

    def __init__(self, api: AdminApi, access: Access) -> None:
        self.api = api
        self.access = access

    def add_routes(self, app: web.Application) -> None:
        """Mount the pages, the actions and the static files on ``app``."""
        r = app.router
        r.add_get("/login", self.login_form)
        r.add_post("/login", self.login)
        r.add_post("/logout", self.logout)
        r.add_get("/", self.overview)
        r.add_get("/events", self.events)
        r.add_get("/events/{event_id}", self.event)
        r.add_post("/events/{event_id}/replay", self.replay)
        r.add_post("/events/replay", self.events_replay)
        r.add_get("/deliveries", self.deliveries)
        r.add_post("/deliveries/replay", self.deliveries_replay)
        for action in ("pause", "resume", "enable"):
            r.add_post(f"/sinks/{{name}}/{action}", self.sink_action)
        r.add_post("/sinks/{name}/test", self.sink_test)
        for action in ("pause", "resume", "retry"):
            r.add_post(f"/triggers/{{account}}/{{trigger}}/{action}", self.trigger_action)
        r.add_static("/static/", STATIC)

    def page(self, title: str, body: str, **kwargs: Any) -> web.Response:
        """A page for a logged-in user: :func:`page` with the Log out button."""
        return page(title, body, csrf=self.access.csrf_value(), **kwargs)

    def _button(self, action: str, label: str) -> str:
        return (
            f'<form method="post" action="{e(action)}" class="inline">'
            f'<input type="hidden" name="{CSRF_FIELD}" value="{e(self.access.csrf_value())}">'
            f"<button>{e(label)}</button></form>"
        )

    # ------------------------------------------------------------------ login

    async def login_form(self, request: web.Request) -> web.Response:
        """GET /login: the form asking for the token."""
        return self._login_page(flash=request.query.get("flash"))

    def _login_page(
        self, status: int = 200, message: str = "", flash: str | None = None
    ) -> web.Response:
        note = f'<p class="error">{e(message)}</p>' if message else ""
        return page(
            "Log in",
            f'{note}<form method="post" action="/login"><label>Console token '
            '<input type="password" name="token" autocomplete="current-password" required>'
            "</label> <button>Log in</button></form>",
            status=status,
            flash=flash,
        )

    async def login(self, request: web.Request) -> web.StreamResponse:
        """POST /login: the right token sets the session cookie and goes to /; a wrong one: 401."""
        form = await request.post()
        given = form.get("token")
        if not isinstance(given, str) or not self.access.token_ok(given):
            return self._login_page(401, "That is not the token.")
        response = _see_other("/")
        response.set_cookie(
            SESSION_COOKIE,
            self.access.session_value(),
            path="/",
            httponly=True,
            samesite="Strict",
            secure=request.secure,
        )
        return response

    async def logout(self, _request: web.Request) -> web.StreamResponse:
        """POST /logout (CSRF-checked like every action): clears the session cookie and
        goes to the login page."""
        response = _back("/login", "Logged out.")
        response.del_cookie(SESSION_COOKIE, path="/")
        return response

    # ------------------------------------------------------------------ reading

    async def overview(self, request: web.Request) -> web.Response:
        """GET /: triggers, sinks and nodes, as the API's status."""
        doc = await in_daemon_thread(self.api.status_doc)
        triggers = []
        for t in doc["triggers"]:
            base = f"/triggers/{_seg(t['account'])}/{_seg(t['trigger'])}"
            buttons = "".join(self._button(f"{base}/{a}", a) for a in ("pause", "resume", "retry"))
            triggers.append(
                f'<tr data-trigger="{e(t["account"])}/{e(t["trigger"])}">'
                f"<td>{e(t['account'])}/{e(t['trigger'])}</td>"
                f'<td data-field="state">{e(t["state"])}</td>'
                f'<td data-field="last_poll_at">{e(t["last_poll_at"])}</td>'
                f'<td data-field="last_outcome">{e(t["last_outcome"])}</td>'
                f'<td data-field="next_poll_at">{e(t["next_poll_at"])}</td>'
                f'<td data-field="items_known">{e(t["items_known"])}</td>'
                f'<td data-field="last_error" class="wrap">{e(t["last_error"])}</td>'
                f"<td>{buttons}</td></tr>"
            )
        sinks = []
        for s in doc["sinks"]:
            base = f"/sinks/{_seg(s['name'])}"
            buttons = "".join(
                self._button(f"{base}/{a}", a) for a in ("pause", "resume", "enable", "test")
            )
            counts = "".join(_count_cell(s["name"], c, s.get(c, 0)) for c in _SINK_COLUMNS)
            why = s.get("disabled_reason") or s.get("paused_reason") or s.get("hint")
            sinks.append(
                f'<tr data-sink="{e(s["name"])}"><td>{e(s["name"])}</td><td>{e(s["url"])}</td>'
                f'<td data-field="state">{e(s["state"])}</td><td class="wrap">{e(why)}</td>{counts}'
                f'<td data-field="last_success_at">{e(s.get("last_success_at"))}</td>'
                f'<td data-field="oldest_pending_seconds">{e(s.get("oldest_pending_seconds"))}'
                f"</td><td>{buttons}</td></tr>"
            )
        nodes = [
            f"<tr><td>{e(n['name'])}</td><td>{e(n['state'])}</td><td>{e(n['version'])}</td>"
            f"<td>{e(n['heartbeat_at'])}</td><td>{e(', '.join(n['leases']))}</td>"
            f"<td>{e(n.get('config'))}</td></tr>"
            for n in doc["nodes"]
        ]
        body = (
            '<section id="overview"><h2>Triggers</h2>'
            + _table(
                (
                    "trigger",
                    "state",
                    "last poll",
                    "outcome",
                    "next poll",
                    "items known",
                    "last error",
                    "",
                ),
                triggers,
            )
            + "<h2>Sinks</h2>"
            + _table(
                (
                    "sink",
                    "url",
                    "state",
                    "why",
                    *_SINK_COLUMNS,
                    "last success",
                    "oldest pending (s)",
                    "",
                ),
                sinks,
            )
            + (
                '<p class="note">The delivered counts are read at most every '
                f"{DELIVERED_MAX_AGE:.0f} s (they take every delivered row to count); the "
                "other counts are exact.</p>"
            )
            + "<h2>Nodes</h2>"
            + _table(("node", "state", "version", "heartbeat", "leases", "config"), nodes)
            + (
                "<h2>Replay</h2><p>Replay from an event's page, the "
                '<a href="/deliveries">dead and held deliveries</a> in bulk, or with '
                "<code>trigger-engine replay</code>.</p></section>"
            )
        )
        return self.page("Overview", body, flash=request.query.get("flash"))

    async def events(self, request: web.Request) -> web.Response:
        """GET /events: newest first, the API's filters, search and cursor."""
        query = request.query
        lists = {name: [v for v in query.getall(name, []) if v] for name in _LISTS}
        single = {
            k: v
            for k, v in query.items()
            if k in ("since", "until", "search", "key", "limit", "cursor") and v
        }
        form = self._filter_form(query)
        try:
            for name, value in query.items():
                if "\x00" in value:
                    raise ApiError(400, f"{name} contains a NUL character")
            found = await in_daemon_thread(self.api.events_page, single, lists)
        except ApiError as exc:
            return self.page(
                "Events", f'<p class="error">{e(exc.message)}</p>{form}', status=exc.status
            )
        rows = []
        for ev in found["events"]:
            deliveries = ", ".join(
                f"{d['sink']}: {d['status']} ({d['attempts']})" for d in ev["deliveries"]
            )
            rows.append(
                f'<tr data-event="{e(ev["id"])}"><td><input type="checkbox" name="event" '
                f'value="{e(ev["id"])}" form="replay-selected" aria-label="select"></td>'
                f'<td><a href="/events/{_seg(ev["id"])}">{e(ev["id"])}</a></td>'
                f"<td>{e(ev['created_at'])}</td><td>{e(ev['type'])}</td>"
                f'<td>{e(ev["account"])}</td><td class="wrap">{e(ev["key"])}</td>'
                f'<td data-field="deliveries" class="wrap">{e(deliveries)}</td></tr>'
            )
        filters = [(k, v) for k, v in query.items() if k not in ("cursor", "flash") and v]
        older, scanned = _older("/events", filters, found)
        bounded = found.get("search_bounded_at")
        note = (
            f'<p id="search-bounded">The search read only the newest {bounded:,} of the events '
            "its index could not answer for (a term under 3 characters, or events not indexed "
            "yet); older ones were not searched.</p>"
            if bounded
            else ""
        )
        note += scanned
        # the first page follows new events (static/console.js) with the same filters
        live = "" if query.get("cursor") else f"/api/v1/events?{urlencode(filters)}"
        table = _table(
            ("", "id", "created", "type", "account", "key", "deliveries"),
            rows,
            attrs=f' id="events" data-live="{e(live)}"',
        )
        empty = "" if rows else '<p id="no-events">No events match.</p>'
        replay = (
            '<form method="post" action="/events/replay" id="replay-selected" class="replay">'
            f'<input type="hidden" name="{CSRF_FIELD}" value="{e(self.access.csrf_value())}">'
            "<button>Replay selected</button></form>"
        )
        body = form + note + _quarantined_table(found.get("quarantined", [])) + table + empty
        return self.page("Events", body + replay + older, flash=query.get("flash"))

    def _filter_form(self, query: Mapping[str, str]) -> str:
        fields = "".join(
            f'<label>{name} <input name="{name}" value="{e(query.get(name, ""))}"'
            f"{_HINTS.get(name, '')}></label> "
            for name in ("type", "account", "status", "sink", "since", "until", "search")
        )
        return (
            f'<form method="get" action="/events" class="filters">{fields}'
            "<button>filter</button></form>"
        )

    async def event(self, request: web.Request) -> web.Response:
        """GET /events/{id}: the payload, each delivery with each attempt, Replay."""
        event_id = request.match_info["event_id"]
        detail = (
            None
            if "\x00" in event_id
            else await in_daemon_thread(self.api.store.events.detail, event_id)
        )
        if detail is None:
            return self.page("No such event", f"<p>No event {e(event_id)}.</p>", status=404)
        doc = views.event_detail_dict(detail)
        parts = [
            f"<dl><dt>type</dt><dd>{e(doc['type'])}</dd><dt>account</dt><dd>{e(doc['account'])}"
            f"</dd><dt>trigger</dt><dd>{e(doc['trigger'])}</dd><dt>key</dt><dd>{e(doc['key'])}"
            f"</dd><dt>created</dt><dd>{e(doc['created_at'])}</dd></dl>",
            self._button(f"/events/{_seg(event_id)}/replay", "Replay"),
            # static/console.js keeps the deliveries below current from this address
            f'<div id="event" data-live="/api/v1/events/{e(_seg(event_id))}"></div>',
            "<h2>Deliveries</h2>",
        ]
        for d in doc["deliveries"]:
            attempts = [
                f"<tr><td>{e(a['attempt'])}</td><td>{e(a['started_at'])}</td>"
                f"<td>{e(a['status_code'])}</td><td>{e(a['latency_ms'])}</td>"
                f'<td class="wrap">{e(a["error"])}</td>'
                f"<td><pre>{e((a['response_body'] or '')[:1024])}</pre>"
                "</td></tr>"
                for a in d["attempt_log"]
            ]
            parts.append(
                f'<section data-delivery="{e(d["sink"])}">'
                f'<h3>{e(d["sink"])}: <span class="status">{e(d["status"])}</span></h3>'
                f'<p>next attempt <span data-field="next_attempt_at">{e(d["next_attempt_at"])}'
                f'</span>, delivered <span data-field="delivered_at">{e(d["delivered_at"])}'
                "</span></p>"
                + _table(
                    ("#", "time", "status code", "latency (ms)", "error", "response"), attempts
                )
                + "</section>"
            )
        payload = e(views.exact_json(doc["payload"]))
        parts.append(f'<h2>Payload</h2><pre id="payload">{payload}</pre>')
        return self.page(f"Event {event_id}", "".join(parts), flash=request.query.get("flash"))

    # ------------------------------------------------------------------ dead and held

    async def deliveries(self, request: web.Request) -> web.Response:
        """GET /deliveries: the dead and held deliveries (``status``, ``sink``, ``type``,
        ``since`` filters), newest event first, and a form replaying all that match."""
        query = request.query
        try:
            chosen = _chosen(query)
            single = {"limit": "200"}
            for name in ("since", "cursor"):
                if query.get(name):
                    single[name] = query[name]
            lists = {
                "status": chosen["status"],
                "sink": chosen["sink"],
                "type": chosen["type"],
                "account": [],
            }
            found = await in_daemon_thread(self.api.events_page, single, lists)
        except ApiError as exc:
            body = f'<p class="error">{e(exc.message)}</p>{self._deliveries_form(query)}'
            return self.page("Dead and held deliveries", body, status=exc.status)
        rows = []
        for ev in found["events"]:
            for d in ev["deliveries"]:
                if d["status"] not in chosen["status"]:
                    continue
                if chosen["sink"] and d["sink"] not in chosen["sink"]:
                    continue
                error = d["last_error"] or (
                    f"HTTP {d['last_status_code']}" if d["last_status_code"] else None
                )
                rows.append(
                    f'<tr data-delivery="{e(ev["id"])}/{e(d["sink"])}">'
                    f'<td><a href="/events/{_seg(ev["id"])}">{e(ev["id"])}</a></td>'
                    f"<td>{e(d['sink'])}</td><td>{e(d['status'])}</td><td>{e(ev['type'])}</td>"
                    f"<td>{e(ev['account'])}</td><td>{e(d['attempts'])}</td>"
                    f'<td class="wrap">{e(error)}</td><td>{e(ev["created_at"])}</td></tr>'
                )
        params = [(k, v) for k, v in query.items() if k not in ("cursor", "flash") and v]
        older, scanned = _older("/deliveries", params, found)
        table = _table(
            ("event", "sink", "status", "type", "account", "attempts", "last error", "created"),
            rows,
        )
        empty = "" if rows else "<p>No dead or held deliveries match.</p>"
        replay = (
            self._selection_form("/deliveries/replay", chosen, "Replay all that match…")
            if rows
            else ""
        )
        return self.page(
            "Dead and held deliveries",
            self._deliveries_form(query) + scanned + table + empty + older + replay,
            flash=query.get("flash"),
        )

    def _deliveries_form(self, query: Mapping[str, str]) -> str:
        statuses = set(query.getall("status", [])) if hasattr(query, "getall") else set()
        boxes = "".join(
            f'<label><input type="checkbox" name="status" value="{s}"'
            f"{' checked' if s in statuses or not statuses else ''}> {s}</label> "
            for s in _REPLAYABLE
        )
        fields = "".join(
            f'<label>{name} <input name="{name}" value="{e(query.get(name, ""))}"></label> '
            for name in ("sink", "type", "since")
        )
        return (
            f'<form method="get" action="/deliveries" class="filters">{boxes}{fields}'
            "<button>filter</button></form>"
        )

    def _selection_form(
        self, action: str, chosen: Mapping[str, list[str]], label: str, *, confirm: bool = False
    ) -> str:
        hidden = "".join(
            f'<input type="hidden" name="{name}" value="{e(v)}">'
            for name, values in chosen.items()
            for v in values
        )
        if confirm:
            hidden += '<input type="hidden" name="confirm" value="yes">'
        return (
            f'<form method="post" action="{e(action)}" class="replay">{hidden}'
            f'<input type="hidden" name="{CSRF_FIELD}" value="{e(self.access.csrf_value())}">'
            f"<button>{e(label)}</button></form>"
        )

    async def deliveries_replay(self, request: web.Request) -> web.StreamResponse:
        """POST /deliveries/replay: without ``confirm``, the count a replay of the selection
        would queue (the API's dry run) and a form to confirm; with it, the replay."""
        form = await request.post()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        multi = _Multi(form)
        back = "/deliveries"
        try:
            chosen = _chosen(multi)
        except ApiError as exc:
            return _back(back, exc.message)
        params = [(k, v) for k, values in chosen.items() for v in values]
        back = f"/deliveries?{urlencode(params)}" if params else back
        body: dict[str, Any] = {k: v for k, v in chosen.items() if k != "since"}
        body["since"] = chosen["since"][0] if chosen["since"] else "1970-01-01"
        confirm = fields.get("confirm") == "yes"
        body["dry_run"] = not confirm
        try:
            done = await in_daemon_thread(self.api.replay_doc, body)
        except ApiError as exc:
            return _back(back, exc.message)
        if confirm:
            return _see_other(f"{back}{'&' if params else '?'}{urlencode({'flash': _did(done)})}")
        count = done["queued"]
        noun = "delivery" if count == 1 else "deliveries"
        skipped = _skipped(done)
        text = (
            f'<p class="confirm">Replay {count} {noun}?</p>'
            f"<p>{e(_selection_words(chosen))}{e(skipped)}</p>"
            + (
                self._selection_form("/deliveries/replay", chosen, "Replay", confirm=True)
                if count
                else ""
            )
            + f'<p><a href="{e(back)}">Cancel</a></p>'
        )
        return self.page("Replay dead and held deliveries", text)

    # ------------------------------------------------------------------ changing

    async def replay(self, request: web.Request) -> web.StreamResponse:
        """POST /events/{id}/replay."""
        event_id = request.match_info["event_id"]
        back = f"/events/{_seg(event_id)}"
        try:
            done = await in_daemon_thread(self.api.replay_doc, {"event": [event_id]})
        except ApiError as exc:
            return _back(back, exc.message)
        return _back(back, f"replayed {event_id}: {done['queued']} deliveries queued")

    async def events_replay(self, request: web.Request) -> web.StreamResponse:
        """POST /events/replay: the events ticked on the events page (``event``, repeated)."""
        form = await request.post()
        ids = [v for v in form.getall("event", []) if isinstance(v, str) and v]
        if not ids:
            return _back("/events", "Tick the events to replay first.")
        try:
            done = await in_daemon_thread(self.api.replay_doc, {"event": ids})
        except ApiError as exc:
            return _back("/events", exc.message)
        return _back("/events", _did(done))

    async def sink_action(self, request: web.Request) -> web.StreamResponse:
        """POST /sinks/{name}/pause|resume|enable: the API's ``sink_change``."""
        name, action = request.match_info["name"], request.path.rsplit("/", 1)[1]
        try:
            done = await in_daemon_thread(self.api.sink_change, name, action, by="console")
        except ApiError as exc:
            return _back("/", exc.message)
        return _back("/", _sink_message(name, done))

    async def sink_test(self, request: web.Request) -> web.StreamResponse:
        """POST /sinks/{name}/test: one signed ``engine.test`` event (``sink_test_doc``)."""
        name = request.match_info["name"]
        try:
            sent = await self.api.sink_test_doc(name)
        except ApiError as exc:
            return _back("/", exc.message)
        return _back("/", _test_message(name, sent))

    async def trigger_action(self, request: web.Request) -> web.StreamResponse:
        """POST /triggers/{account}/{trigger}/pause|resume|retry: ``trigger_change``."""
        account, trigger = request.match_info["account"], request.match_info["trigger"]
        action = request.path.rsplit("/", 1)[1]
        try:
            done = await in_daemon_thread(self.api.trigger_change, account, trigger, action)
        except ApiError as exc:
            return _back("/", exc.message)
        return _back("/", _trigger_message(done))


_REPLAYABLE = ("dead", "held")


class _Multi:
    """A posted form read like a query (``get`` and ``getall``)."""

    def __init__(self, form: Any) -> None:
        self.form = form

    def get(self, name: str, default: str = "") -> str:
        value = self.form.get(name, default)
        return value if isinstance(value, str) else default

    def getall(self, name: str, default: list[str]) -> list[str]:
        return [v for v in self.form.getall(name, default) if isinstance(v, str)]


def _chosen(query: Any) -> dict[str, list[str]]:
    """The dead/held page's selection: ``status`` (dead, held; both when none), ``sink``,
    ``type``, ``since``."""
    for name in ("status", "sink", "type", "since"):
        for value in query.getall(name, []):
            if "\x00" in value:
                raise ApiError(400, f"{name} contains a NUL character")
    statuses = [v for v in query.getall("status", []) if v]
    for value in statuses:
        if value not in _REPLAYABLE:
            raise ApiError(400, f"status must be dead or held, not '{value}'")
    return {
        "status": statuses or list(_REPLAYABLE),
        "sink": [v for v in query.getall("sink", []) if v],
        "type": [v for v in query.getall("type", []) if v],
        "since": [v for v in query.getall("since", []) if v][:1],
    }


def _selection_words(chosen: Mapping[str, list[str]]) -> str:
    parts = [f"status {' or '.join(chosen['status'])}"]
    for name in ("sink", "type"):
        if chosen[name]:
            parts.append(f"{name} {' or '.join(chosen[name])}")
    if chosen["since"]:
        parts.append(f"since {chosen['since'][0]}")
    return "Deliveries with " + ", ".join(parts) + "."


def _skipped(done: Mapping[str, Any]) -> str:
    notes = []
    if done.get("held"):
        notes.append(f"{done['held']} to a paused sink stay held until it is resumed")
    for field, why in (
        ("skipped_disabled", "to a disabled sink"),
        ("skipped_unknown", "to a sink no longer configured"),
        ("skipped_in_flight", "being attempted right now"),
    ):
        if done.get(field):
            notes.append(f"{done[field]} left alone ({why})")
    return (" " + "; ".join(notes) + ".") if notes else ""


def _did(done: Mapping[str, Any]) -> str:
    count = done["queued"]
    noun = "delivery" if count == 1 else "deliveries"
    events = done["events"]
    return f"replayed {count} {noun} of {events} event{'' if events == 1 else 's'}." + _skipped(
        done
    )


def _older(path: str, filters: list[tuple[str, str]], found: Mapping[str, Any]) -> tuple[str, str]:
    """The link to the next (older) page; or, when the page read only the newest events
    before its cursor (``scanned_to``), the note saying how far back it looked with a link
    that goes on from there: (link, note)."""
    if not found["next_cursor"]:
        return "", ""
    href = e(f"{path}?{urlencode([*filters, ('cursor', found['next_cursor'])])}")
    scanned = found.get("scanned_to")
    if scanned:
        note = (
            f'<p class="bounded" id="scanned-to">Searched back to {e(scanned)} (the newest '
            f"{PAGE_SCAN:,} events before this page); "
            f'<a rel="next" href="{href}">search older events</a>.</p>'
        )
        return "", note
    return f'<p><a rel="next" href="{href}">older</a></p>', ""


def _count_cell(sink: str, column: str, value: Any) -> str:
    if column in _REPLAYABLE:
        link = f"/deliveries?{urlencode({'status': column, 'sink': sink})}"
        return f'<td><a data-field="{column}" href="{e(link)}">{e(value)}</a></td>'
    return f'<td data-field="{column}">{e(value)}</td>'


def _seg(value: str) -> str:
    """``value`` as one URL path segment."""
    from urllib.parse import quote

    return quote(value, safe="")


def _back(to: str, message: str) -> web.StreamResponse:
    """Back to ``to`` with a one-line message (shown escaped)."""
    return _see_other(f"{to}?{urlencode({'flash': message})}")


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _sink_message(name: str, doc: Mapping[str, Any]) -> str:
    verb = {"pause": "paused", "resume": "resumed", "enable": "enabled"}[doc["action"]]
    return f"sink {name} {verb} ({doc.get('held', 0)} held, {doc.get('released', 0)} released)"


def _test_message(name: str, doc: Mapping[str, Any]) -> str:
    if doc.get("ok"):
        code, ms = doc.get("status_code"), doc.get("latency_ms")
        return f"test event sent to {name}: HTTP {code} in {ms} ms"
    return f"test event to {name} failed: {doc.get('error') or doc.get('status_code')}"


def _trigger_message(doc: Mapping[str, Any]) -> str:
    name = f"{doc['account']}/{doc['trigger']}"
    if doc["action"] == "retry":
        return f"{name}: backoff cleared" if doc["cleared"] else f"{name}: was not backing off"
    return f"{name} {'paused' if doc['paused'] else 'resumed'}"
