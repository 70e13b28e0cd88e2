"""trigger-engine: self-hosted polling triggers for the Meet Alfred API.

The data flows down the packages: ``config`` (the TOML file) → ``runtime`` (the daemon and
its schedule) → ``polling`` (source → poller) → ``db`` (dedupe and the outbox, one
transaction) → ``delivery`` (dispatcher → one signed attempt) → the sinks. ``core`` is the
pure logic they share, ``types`` their vocabulary, ``ops`` what operators see, ``cli`` the
commands, ``sandbox`` the simulator and the demo. README.md, "Architecture", has the map.
"""

__version__ = "0.1.0"
