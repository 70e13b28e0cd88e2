"""The configuration: one TOML file turned into frozen, validated settings.

- ``models``: the frozen pydantic models (``Config`` and its parts).
- ``fields``: the field types and small checks the models are built from.
- ``loading``: finding and reading the file, ``${NAME}`` substitution, building a ``Config``.
- ``diagnostics``: every problem as one sentence naming the file, the line and the key.
- ``builtin``: the built-in triggers' defaults (``leads``, ``connections``, ``campaigns``...).
"""

from trigger_engine.config.loading import config_from_dict, find_config_path, load_config
from trigger_engine.config.models import (
    Account,
    Config,
    EngineSettings,
    PaginationSettings,
    RetrySettings,
    Sink,
    SourceSettings,
    TriggerSettings,
)
from trigger_engine.core.durations import parse_duration

__all__ = [
    "Account",
    "Config",
    "EngineSettings",
    "PaginationSettings",
    "RetrySettings",
    "Sink",
    "SourceSettings",
    "TriggerSettings",
    "config_from_dict",
    "find_config_path",
    "load_config",
    "parse_duration",
]
