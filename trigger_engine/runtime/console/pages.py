"""The web console's pages, server-rendered HTML on the daemon's aiohttp server:
``/login``, ``/`` (overview), ``/events``, ``/events/{id}`` and the actions as POST forms.

The pages call the admin API's functions (:class:`~.api.AdminApi`), so they show and do
exactly what the API (and the CLI) does. Every value is HTML-escaped (:func:`e`); no
inline script or style (the CSP is ``default-src 'self'``): the CSS and the small script
that refreshes the overview are files under ``static/``. The pages work without it.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from trigger_engine.runtime import views
from trigger_engine.runtime.console.api import _LISTS, AdminApi, ApiError
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


def page(title: str, body: str, *, status: int = 200, flash: str | None = None) -> web.Response:
    """A whole HTML page."""
    message = f'<p class="flash" role="status">{e(flash)}</p>' if flash else ""
    text = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(title)} · trigger-engine</title>"
        '<link rel="stylesheet" href="/static/console.css">'
        '<script src="/static/console.js" defer></script></head><body>'
        '<header><a href="/">overview</a> <a href="/events">events</a> '
        '<a href="/deliveries">dead and held</a>'
        '<span id="reachability" hidden>daemon unreachable</span></header>'
        f"<main><h1>{e(title)}</h1>{message}{body}</main></body></html>"
    )
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def refused(status: int, message: str) -> web.Response:
    """A page turned away: the sentence and a link to log in, nothing else."""
    return page(
        "Unauthorized" if status == 401 else "Refused",
        f'<p>{e(message)}</p><p><a href="/login">Log in</a></p>',
        status=status,
    )


def _table(headers: Iterable[str], rows: Iterable[str]) -> str:
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


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
        r.add_get("/", self.overview)
        r.add_get("/events", self.events)
        r.add_get("/events/{event_id}", self.event)
        r.add_post("/events/{event_id}/replay", self.replay)
        r.add_get("/deliveries", self.deliveries)
        r.add_post("/deliveries/replay", self.deliveries_replay)
        for action in ("pause", "resume", "enable"):
            r.add_post(f"/sinks/{{name}}/{action}", self.sink_action)
        r.add_post("/sinks/{name}/test", self.sink_test)
        for action in ("pause", "resume", "retry"):
            r.add_post(f"/triggers/{{account}}/{{trigger}}/{action}", self.trigger_action)
        r.add_static("/static/", STATIC)

    def _button(self, action: str, label: str) -> str:
        return (
            f'<form method="post" action="{e(action)}" class="inline">'
            f'<input type="hidden" name="{CSRF_FIELD}" value="{e(self.access.csrf_value())}">'
            f"<button>{e(label)}</button></form>"
        )

    # ------------------------------------------------------------------ login

    async def login_form(self, _request: web.Request) -> web.Response:
        """GET /login: the form asking for the token."""
        return self._login_page()

    def _login_page(self, status: int = 200, message: str = "") -> web.Response:
        note = f'<p class="error">{e(message)}</p>' if message else ""
        return page(
            "Log in",
            f'{note}<form method="post" action="/login"><label>Console token '
            '<input type="password" name="token" autocomplete="current-password" required>'
            "</label> <button>Log in</button></form>",
            status=status,
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
                f'<td data-field="items_known">{e(t["items_known"])}</td>'
                f'<td data-field="last_error">{e(t["last_error"])}</td><td>{buttons}</td></tr>'
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
                f'<td data-field="state">{e(s["state"])}</td><td>{e(why)}</td>{counts}'
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
                ("trigger", "state", "last poll", "outcome", "items known", "last error", ""),
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
            + "<h2>Nodes</h2>"
            + _table(("node", "state", "version", "heartbeat", "leases", "config"), nodes)
            + (
                "<h2>Replay</h2><p>Replay from an event's page, the "
                '<a href="/deliveries">dead and held deliveries</a> in bulk, or with '
                "<code>trigger-engine replay</code>.</p></section>"
            )
        )
        return page("Overview", body, flash=request.query.get("flash"))

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
            return page("Events", f'<p class="error">{e(exc.message)}</p>{form}', status=exc.status)
        rows = []
        for ev in found["events"]:
            deliveries = ", ".join(
                f"{d['sink']}: {d['status']} ({d['attempts']})" for d in ev["deliveries"]
            )
            rows.append(
                f'<tr><td><a href="/events/{_seg(ev["id"])}">{e(ev["id"])}</a></td>'
                f"<td>{e(ev['created_at'])}</td><td>{e(ev['type'])}</td>"
                f"<td>{e(ev['account'])}</td><td>{e(ev['key'])}</td><td>{e(deliveries)}</td></tr>"
            )
        older = ""
        if found["next_cursor"]:
            params = [(k, v) for k, v in query.items() if k != "cursor" and v]
            params.append(("cursor", found["next_cursor"]))
            older = f'<p><a rel="next" href="/events?{e(urlencode(params))}">older</a></p>'
        bounded = found.get("search_bounded_at")
        note = f"<p>The search looked at events back to {e(bounded)}.</p>" if bounded else ""
        table = _table(("id", "created", "type", "account", "key", "deliveries"), rows)
        empty = "" if rows else "<p>No events match.</p>"
        return page("Events", form + note + table + empty + older, flash=query.get("flash"))

    def _filter_form(self, query: Mapping[str, str]) -> str:
        fields = "".join(
            f'<label>{name} <input name="{name}" value="{e(query.get(name, ""))}"></label> '
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
            return page("No such event", f"<p>No event {e(event_id)}.</p>", status=404)
        doc = views.event_detail_dict(detail)
        parts = [
            f"<dl><dt>type</dt><dd>{e(doc['type'])}</dd><dt>account</dt><dd>{e(doc['account'])}"
            f"</dd><dt>trigger</dt><dd>{e(doc['trigger'])}</dd><dt>key</dt><dd>{e(doc['key'])}"
            f"</dd><dt>created</dt><dd>{e(doc['created_at'])}</dd></dl>",
            self._button(f"/events/{_seg(event_id)}/replay", "Replay"),
            f"<h2>Payload</h2><pre>{e(views.exact_json(doc['payload']))}</pre>",
            "<h2>Deliveries</h2>",
        ]
        for d in doc["deliveries"]:
            attempts = [
                f"<tr><td>{e(a['attempt'])}</td><td>{e(a['started_at'])}</td>"
                f"<td>{e(a['status_code'])}</td><td>{e(a['latency_ms'])}</td>"
                f"<td>{e(a['error'])}</td><td><pre>{e((a['response_body'] or '')[:1024])}</pre>"
                "</td></tr>"
                for a in d["attempt_log"]
            ]
            parts.append(
                f'<h3>{e(d["sink"])}: <span class="status">{e(d["status"])}</span></h3>'
                f"<p>next attempt {e(d['next_attempt_at'])}, delivered {e(d['delivered_at'])}</p>"
                + _table(
                    ("#", "time", "status code", "latency (ms)", "error", "response"), attempts
                )
            )
        return page(f"Event {event_id}", "".join(parts), flash=request.query.get("flash"))

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
            return page("Dead and held deliveries", body, status=exc.status)
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
                    f"<td>{e(error)}</td><td>{e(ev['created_at'])}</td></tr>"
                )
        older = ""
        if found["next_cursor"]:
            params = [(k, v) for k, v in query.items() if k not in ("cursor", "flash") and v]
            params.append(("cursor", found["next_cursor"]))
            older = f'<p><a rel="next" href="/deliveries?{e(urlencode(params))}">older</a></p>'
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
        return page(
            "Dead and held deliveries",
            self._deliveries_form(query) + table + empty + older + replay,
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
        return page("Replay dead and held deliveries", text)

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

    async def sink_action(self, request: web.Request) -> web.StreamResponse:
        """POST /sinks/{name}/pause|resume|enable."""
        return await self._via_api(request, self.api.sink_action, _sink_message)

    async def sink_test(self, request: web.Request) -> web.StreamResponse:
        """POST /sinks/{name}/test: one signed ``engine.test`` event."""
        return await self._via_api(request, self.api.sink_test, _test_message)

    async def trigger_action(self, request: web.Request) -> web.StreamResponse:
        """POST /triggers/{account}/{trigger}/pause|resume|retry."""
        return await self._via_api(request, self.api.trigger_action, _trigger_message)

    async def _via_api(self, request: web.Request, handler: Any, say: Any) -> web.StreamResponse:
        try:
            response = await handler(request)
        except ApiError as exc:
            return _back("/", exc.message)
        return _back("/", say(request, json.loads(response.text)))


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


def _sink_message(request: web.Request, doc: Mapping[str, Any]) -> str:
    name = request.match_info["name"]
    verb = {"pause": "paused", "resume": "resumed", "enable": "enabled"}[doc["action"]]
    return f"sink {name} {verb} ({doc.get('held', 0)} held, {doc.get('released', 0)} released)"


def _test_message(request: web.Request, doc: Mapping[str, Any]) -> str:
    name = request.match_info["name"]
    if doc.get("ok"):
        code, ms = doc.get("status_code"), doc.get("latency_ms")
        return f"test event sent to {name}: HTTP {code} in {ms} ms"
    return f"test event to {name} failed: {doc.get('error') or doc.get('status_code')}"


def _trigger_message(request: web.Request, doc: Mapping[str, Any]) -> str:
    name = f"{doc['account']}/{doc['trigger']}"
    if doc["action"] == "retry":
        return f"{name}: backoff cleared" if doc["cleared"] else f"{name}: was not backing off"
    return f"{name} {'paused' if doc['paused'] else 'resumed'}"
