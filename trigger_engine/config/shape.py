"""A configuration's shape, as the node registry records it: what two nodes must agree on
for an item to become the same events, delivered to the same sinks.

* :func:`served_sinks`: each sink's name and subscription (never its URL, secret or headers),
  stored in the clear by every heartbeat: the other nodes fan events out to them.
* :func:`config_digest`: a short SHA-256 of the shape: the account names, each trigger's
  dedupe definition (path, key, items_path, params, update_fields) and event type, and the
  sinks' names and subscriptions. Intervals, timeouts and every secret, key and URL are
  left out; ``params`` go in only through the hash.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from trigger_engine.config.models import Config
from trigger_engine.types import SinkSubscriptions

DIGEST_LENGTH = 12  # hex digits of SHA-256 kept: enough to tell configurations apart


def served_sinks(config: Config) -> SinkSubscriptions:
    """The sinks of ``config``: name → the event types it subscribes to (None: every one)."""
    return {sink.name: sink.events for sink in config.sinks}


def config_shape(config: Config) -> dict[str, Any]:
    """What the digest is computed from (see the module)."""
    return {
        "accounts": sorted(a.name for a in config.accounts),
        "triggers": {
            name: {
                "event": t.event,
                "path": t.path,
                "key": list(t.key),
                "items_path": t.items_path,
                "params": t.params,
                "update_fields": None if t.update_fields is None else list(t.update_fields),
            }
            for name, t in sorted(config.triggers.items())
        },
        "sinks": {
            name: None if events is None else sorted(events)
            for name, events in sorted(served_sinks(config).items())
        },
    }


def config_digest(config: Config) -> str:
    """A short digest of :func:`config_shape`: equal for configurations that agree."""
    data = orjson.dumps(config_shape(config), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(data).hexdigest()[:DIGEST_LENGTH]
