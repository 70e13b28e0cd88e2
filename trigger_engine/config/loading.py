"""Finding, reading and validating the configuration file: the package's entry points.

Loading goes: read the file → ``tomllib`` → a bound on nesting → ``${NAME}`` substitution
from the environment → validation (:mod:`~trigger_engine.config.models`). Every problem
becomes one :class:`~trigger_engine.errors.ConfigError` sentence
(:mod:`~trigger_engine.config.diagnostics`).
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from trigger_engine.config.diagnostics import Where, dotted, toml_error, translate
from trigger_engine.config.fields import Loc
from trigger_engine.config.models import Config
from trigger_engine.errors import ConfigError

CONFIG_ENV_VAR = "TRIGGER_ENGINE_CONFIG"
DEFAULT_CONFIG_NAME = "trigger-engine.toml"

# --- nesting

# The configuration needs five levels at most (the file, [[sinks]], a sink, its [retry], its
# schedule); anything nested deeper than this is refused before a recursive walk (tomllib's
# parser, the substitution below) could run out of stack on it.
MAX_DEPTH = 32
TOO_DEEP = f"arrays or tables are nested more than {MAX_DEPTH} levels deep"


def _too_deep(data: Any) -> Loc | None:
    """The key path of a value nested more than MAX_DEPTH levels deep (the file's own table
    is level 1), or None. Iterative: it never recurses, whatever the depth."""
    stack: list[tuple[Loc, Any]] = [((), data)]
    while stack:
        loc, value = stack.pop()
        if isinstance(value, dict):
            children: Any = value.items()
        elif isinstance(value, list | tuple):
            children = enumerate(value)
        else:
            continue
        if len(loc) >= MAX_DEPTH:
            return loc
        stack.extend(((*loc, key), child) for key, child in children)
    return None


# --- ${NAME} substitution

_VARIABLE_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _substitute(
    value: Any,
    loc: Loc,
    env: Mapping[str, str],
    where: Where,
    used: dict[Loc, list[tuple[str, str]]],
) -> Any:
    """``value`` with every ``${NAME}`` replaced from ``env``; records in ``used`` which
    variables went where, so that error sentences can show ``${NAME}`` instead of the value."""
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                raise where.error(
                    loc,
                    f"{dotted(loc)} uses ${{{name}}}, which is not set in the environment",
                )
            used.setdefault(loc, []).append((name, env[name]))
            return env[name]

        return _VARIABLE_RE.sub(replace, value)
    if isinstance(value, dict):
        return {k: _substitute(v, (*loc, k), env, where, used) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_substitute(v, (*loc, i), env, where, used) for i, v in enumerate(value))
    return value


# --- entry points


def find_config_path(cli_value: str | None, env: Mapping[str, str]) -> Path:
    """``--config/-c`` if given, else ``$TRIGGER_ENGINE_CONFIG``, else ``./trigger-engine.toml``."""
    if cli_value:
        return Path(cli_value).expanduser()
    if env.get(CONFIG_ENV_VAR):
        return Path(env[CONFIG_ENV_VAR]).expanduser()
    return Path.cwd() / DEFAULT_CONFIG_NAME


def _build(data: Any, where: Where, env: Mapping[str, str] | None, path: Path | None) -> Config:
    if not isinstance(data, dict):
        raise where.error((), "the configuration must be a table of keys")
    if "path" in data:
        raise where.error(("path",), "unknown key 'path'")
    if (deep := _too_deep(data)) is not None:
        raise where.error(deep[:2], f"{dotted(deep[:2])}: {TOO_DEEP}")
    used: dict[Loc, list[tuple[str, str]]] = {}
    data = _substitute(data, (), os.environ if env is None else env, where, used)
    try:
        return Config.model_validate({**data, "path": path})
    except ValidationError as exc:
        raise translate(exc, where, used) from None


def config_from_dict(
    data: dict[str, Any], *, path: Path | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """A Config from already-parsed TOML data, with the same ``${NAME}`` substitution and checks."""
    return _build(data, Where(path), env, path)


def _kind(mode: int) -> str | None:
    """What a file that is not a regular one is, for the sentence; None: a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


def _read_file(path: Path) -> bytes:
    """The bytes of the configuration file at ``path``, refusing at once (one sentence) a
    path that is not a regular file: reading a FIFO would wait for a writer for ever, a
    device for as long as it likes. The file is opened without blocking and checked
    (``fstat``) before anything is read from it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(
            f"configuration file {path} not found; pass --config FILE or set {CONFIG_ENV_VAR}"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"configuration file {path} is a directory, not a file") from None
    except PermissionError:
        raise ConfigError(f"cannot read configuration file {path}: permission denied") from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from None
    try:
        kind = _kind(os.fstat(fd).st_mode)
    except OSError as exc:
        os.close(fd)
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from None
    if kind is not None:
        os.close(fd)
        if kind == "a directory":
            raise ConfigError(f"configuration file {path} is a directory, not a file")
        raise ConfigError(
            f"configuration file {path} is {kind}, not a regular file; point --config "
            "(or TRIGGER_ENGINE_CONFIG) at a regular file"
        )
    with os.fdopen(fd, "rb") as file:
        try:
            return file.read()
        except OSError as exc:
            raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from None


def load_config(path: Path, env: Mapping[str, str] | None = None) -> Config:
    """Read, substitute and validate the TOML file at ``path`` (``env`` defaults to os.environ).
    A path that is not a regular file (a FIFO, a device) is refused without reading it."""
    path = Path(path)
    raw = _read_file(path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: invalid TOML: the file is not UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(toml_error(path, str(exc))) from None
    except RecursionError:  # tomllib's parser recurses once per nested array or inline table
        raise ConfigError(f"{path}: invalid TOML: {TOO_DEEP}") from None
    return _build(data, Where(path, text), env, path.absolute())
