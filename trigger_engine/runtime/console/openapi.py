"""The OpenAPI 3.1 document of the admin API, served at ``GET /api/v1/openapi.json``
(a test checks that every route the API mounts is described here, and the reverse)."""

from __future__ import annotations

from typing import Any

from trigger_engine import __version__

_ERROR = {
    "description": "refused, with one sentence",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}},
            }
        }
    },
}
_OBJECT = {"type": "object", "additionalProperties": True}


def _ok(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema or _OBJECT}},
    }


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): _ERROR for code in (401, *codes)}


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "minLength": 1},
    }


def _list_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "description": description + " (repeat it for several)",
        "schema": {"type": "array", "items": {"type": "string"}},
        "style": "form",
        "explode": True,
    }


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "description": description, "schema": schema}


_IDS = {
    "oneOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
    ]
}
_STRINGS = {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}

_EVENTS_PARAMS = [
    _list_param("type", "event type"),
    _list_param("account", "account name"),
    _list_param(
        "status",
        "delivery status (pending, failed, delivered, dead, held), or quarantined: the "
        "items polls set aside, in 'quarantined' (first page only)",
    ),
    _list_param("sink", "sink name"),
    _query("since", "a duration back from now (2h) or an ISO 8601 time", {"type": "string"}),
    _query("until", "a duration back from now or an ISO 8601 time", {"type": "string"}),
    _query("search", "text the payload contains (ignoring case)", {"type": "string"}),
    _query("key", "the item's key", {"type": "string"}),
    _query(
        "limit",
        "events per page (1-500, default 50)",
        {"type": "integer", "minimum": 1, "maximum": 500},
    ),
    _query("cursor", "next_cursor of the previous page", {"type": "string"}),
]


def _post(summary: str, params: list[dict[str, Any]], codes: tuple[int, ...]) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "parameters": params,
            "responses": {"200": _ok("what it did"), **_errors(403, *codes)},
        }
    }


_SINK = _path_param("name", "the sink's name")
_TRIGGER = [_path_param("account", "the account"), _path_param("trigger", "the trigger")]


def document() -> dict[str, Any]:
    """The OpenAPI document (a fresh copy)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "trigger-engine admin API",
            "version": __version__,
            "description": "What the CLI offers, as JSON. Every call needs "
            "'Authorization: Bearer TOKEN' ([console] token).",
        },
        "servers": [{"url": "/"}],
        "components": {
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"token": []}],
        "paths": {
            "/api/v1/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": _ok("the OpenAPI document"), **_errors()},
                }
            },
            "/api/v1/status": {
                "get": {
                    "summary": "Triggers, sinks and nodes (status --json)",
                    "responses": {"200": _ok("the status"), **_errors()},
                }
            },
            "/api/v1/events": {
                "get": {
                    "summary": "Events, newest first, with their deliveries (events --json)",
                    "parameters": _EVENTS_PARAMS,
                    "responses": {
                        "200": _ok(
                            "a page of events",
                            {
                                "type": "object",
                                "required": ["events", "next_cursor"],
                                "properties": {
                                    "events": {"type": "array", "items": _OBJECT},
                                    "next_cursor": {"type": ["string", "null"]},
                                    "search_bounded_at": {"type": ["integer", "null"]},
                                    "scanned_to": {
                                        "type": ["string", "null"],
                                        "format": "date-time",
                                        "description": (
                                            "set when the page read only the newest 20,000 "
                                            "events before its cursor and they did not fill "
                                            "it: the time of the oldest event read (older "
                                            "ones were not looked at); next_cursor continues "
                                            "from there"
                                        ),
                                    },
                                    "quarantined": {"type": "array", "items": _OBJECT},
                                },
                            },
                        ),
                        **_errors(400),
                    },
                }
            },
            "/api/v1/events/{event_id}": {
                "get": {
                    "summary": "One event: payload, deliveries, attempts (events show --json)",
                    "parameters": [_path_param("event_id", "the event's id (webhook-id)")],
                    "responses": {"200": _ok("the event"), **_errors(404)},
                }
            },
            "/api/v1/replay": {
                "post": {
                    "summary": "Queue the selected deliveries again, same webhook-id (replay)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "anyOf": [
                                        {"required": ["event"]},
                                        {"required": ["since"]},
                                    ],
                                    "properties": {
                                        "event": _IDS,
                                        "since": {"type": "string", "minLength": 1},
                                        "until": {"type": "string"},
                                        "type": _STRINGS,
                                        "account": _STRINGS,
                                        "status": _STRINGS,
                                        "sink": _STRINGS,
                                        "dry_run": {"type": "boolean"},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {"200": _ok("what was queued"), **_errors(400, 403, 404)},
                }
            },
            "/api/v1/sinks/{name}/pause": _post("Pause a sink (held)", [_SINK], (404,)),
            "/api/v1/sinks/{name}/resume": _post("Resume a sink", [_SINK], (404,)),
            "/api/v1/sinks/{name}/enable": _post("Enable a disabled sink", [_SINK], (404,)),
            "/api/v1/sinks/{name}/test": _post("Send a signed engine.test", [_SINK], (404,)),
            "/api/v1/triggers/{account}/{trigger}/pause": _post(
                "Pause a trigger", _TRIGGER, (404,)
            ),
            "/api/v1/triggers/{account}/{trigger}/resume": _post(
                "Resume a trigger", _TRIGGER, (404,)
            ),
            "/api/v1/triggers/{account}/{trigger}/retry": _post(
                "Clear a trigger's backoff", _TRIGGER, (404, 409)
            ),
        },
    }
