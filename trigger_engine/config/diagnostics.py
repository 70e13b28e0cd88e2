"""Turning configuration problems into sentences that name the file, the line and the key.

Pydantic reports errors by key path and type; TOML errors come from tomllib. Here both
become one :class:`~trigger_engine.errors.ConfigError` sentence, in the user's words
(``sinks[1].retry.schedule``), with the line found by :class:`_LineIndex` (tomllib reports
no positions for values), and never with a secret or a substituted environment value.
"""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from trigger_engine.config.fields import Loc
from trigger_engine.config.models import (
    NO_ACCOUNTS,
    NO_TRIGGERS,
    Account,
    Config,
    EngineSettings,
    LocatedError,
    RetrySettings,
    Sink,
    SourceSettings,
    TriggerSettings,
)
from trigger_engine.errors import ConfigError

# --- finding lines

_KEY = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_KEYS = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
_ARRAY_HEADER_RE = re.compile(rf"\s*\[\[\s*({_KEYS})\s*\]\]")
_TABLE_HEADER_RE = re.compile(rf"\s*\[\s*({_KEYS})\s*\]")
_ASSIGN_RE = re.compile(rf"\s*({_KEYS})\s*=")
_KEY_RE = re.compile(_KEY)
_STRING_RE = re.compile(r""""(?:[^"\\]|\\.)*"|'[^']*'""")


def _split_key(text: str) -> tuple[str, ...]:
    return tuple(m.group(0).strip("\"'") for m in _KEY_RE.finditer(text))


class _LineIndex:
    """Which line each table header and key assignment of a TOML text is on.

    A heuristic (tomllib reports no positions for values): it follows ``[table]`` and
    ``[[array]]`` headers, skips the insides of multi-line strings and arrays, and maps
    full key paths such as ``("sinks", 1, "retry", "schedule")`` to 1-based line numbers.
    """

    def __init__(self, text: str) -> None:
        self.lines: dict[Loc, int] = {}
        counts: dict[Loc, int] = {}
        table: Loc = ()
        closing: str | None = None  # inside a multi-line string ending with this
        depth = 0  # open brackets of a multi-line array
        for number, line in enumerate(text.splitlines(), start=1):
            if closing is not None:
                if line.count(closing) % 2:
                    closing = None
                continue
            if depth > 0:
                depth += self._brackets(line)
                continue
            if m := _ARRAY_HEADER_RE.match(line):
                raw = _split_key(m.group(1))
                base = (*self._resolve(raw[:-1], counts), raw[-1])
                counts[base] = counts.get(base, -1) + 1
                table = (*base, counts[base])
                self._record(table, number)
            elif m := _TABLE_HEADER_RE.match(line):
                table = self._resolve(_split_key(m.group(1)), counts)
                self._record(table, number)
            elif m := _ASSIGN_RE.match(line):
                self._record((*table, *_split_key(m.group(1))), number)
                rest = line[m.end() :]
                for quotes in ('"""', "'''"):
                    if rest.count(quotes) % 2:
                        closing = quotes
                        break
                else:
                    depth = max(self._brackets(rest), 0)

    def _record(self, loc: Loc, number: int) -> None:
        """``loc`` and the tables it implicitly opens are at this line, unless seen before."""
        for size in range(1, len(loc) + 1):
            self.lines.setdefault(loc[:size], number)

    @staticmethod
    def _resolve(raw: tuple[str, ...], counts: dict[Loc, int]) -> Loc:
        path: Loc = ()
        for part in raw:
            path = (*path, part)
            if path in counts:
                path = (*path, counts[path])
        return path

    @staticmethod
    def _brackets(text: str) -> int:
        code = _STRING_RE.sub("", text).split("#", 1)[0]
        return code.count("[") - code.count("]")

    def line_of(self, loc: Loc) -> int | None:
        """The line of ``loc``, else of its nearest enclosing key or table that has one."""
        for size in range(len(loc), 0, -1):
            if (found := self.lines.get(loc[:size])) is not None:
                return found
        return None


# --- turning problems into sentences


def dotted(loc: Loc) -> str:
    """A key path as the user writes it: ``sinks[1].retry.schedule``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else f'"{part}"'
            out += f".{text}" if out else text
    return out


class Where:
    """The file being loaded (if any), to prefix error sentences with its name and line."""

    def __init__(self, path: Path | None, text: str | None = None) -> None:
        self.path = path
        self.index = _LineIndex(text) if text is not None else None

    def line_of(self, loc: Loc) -> int | None:
        """The line of ``loc`` in the file's text, when there is a text and it can be found."""
        return self.index.line_of(loc) if self.index is not None and loc else None

    def error(self, loc: Loc, body: str, *, line: int | None = None) -> ConfigError:
        """One ConfigError: file, line (when known) and ``body``, whitespace collapsed."""
        line = self.line_of(loc) if line is None else line
        prefix = [] if self.path is None else [str(self.path)]
        if line is not None:
            prefix.append(f"line {line}")
        if not prefix:
            prefix = ["invalid configuration"]
        message = ": ".join([*prefix, body])
        return ConfigError(" ".join(message.split()))


_MODEL_AT: dict[tuple[str, ...], type[BaseModel]] = {
    (): Config,
    ("engine",): EngineSettings,
    ("source",): SourceSettings,
    ("accounts", "#"): Account,
    ("triggers", "*"): TriggerSettings,
    ("sinks", "#"): Sink,
    ("sinks", "#", "retry"): RetrySettings,
}
_HIDDEN_FIELDS = {Config: {"path"}, TriggerSettings: {"name"}}

_TYPE_SENTENCES = {
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "dict_type": "must be a table",
    "model_type": "must be a table",
    "model_attributes_type": "must be a table",
    "tuple_type": "must be an array",
    "list_type": "must be an array",
    "iterable_type": "must be an array",
    "string_too_short": "must not be empty",
    "path_type": "must be a file path",
}


def _suggest_key(loc: Loc) -> str:
    shape = tuple("#" if isinstance(p, int) else p for p in loc[:-1])
    if shape[:1] == ("triggers",) and len(shape) == 2:
        shape = ("triggers", "*")
    model = _MODEL_AT.get(shape)
    if model is None or not isinstance(loc[-1], str):
        return ""
    allowed = [f for f in model.model_fields if f not in _HIDDEN_FIELDS.get(model, set())]
    close = difflib.get_close_matches(loc[-1], allowed, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _sentence(error: ErrorDetails) -> tuple[Loc, str]:
    """The key path and the one-sentence description of one pydantic error."""
    loc: Loc = tuple(error["loc"])
    kind = error["type"]
    ctx = error.get("ctx") or {}
    where = dotted(loc)
    exc = ctx.get("error")
    if isinstance(exc, LocatedError):
        text = str(exc)
        return exc.loc, f"{dotted(exc.loc)}: {text}" if exc.with_path and exc.loc else text
    if kind in ("value_error", "assertion_error"):
        text = str(exc) if exc is not None else error["msg"]
        return loc, f"{where}: {text}" if where else text
    if kind == "extra_forbidden":
        return loc, f"unknown key '{where}'{_suggest_key(loc)}"
    if kind == "missing":
        if loc == ("accounts",):
            return loc, NO_ACCOUNTS
        if loc == ("triggers",):
            return loc, NO_TRIGGERS
        return loc, f"{where}: missing required key"
    if loc in (("accounts",), ("sinks",)) and kind in ("tuple_type", "list_type"):
        return loc, f"{where}: must be an array of tables: write [[{where}]] with double brackets"
    if loc == ("triggers",) and kind == "dict_type":
        return loc, "triggers: must be a table: write one [triggers.NAME] table per trigger"
    if kind == "literal_error":
        return loc, f"{where}: must be {ctx.get('expected', 'one of the allowed values')}"
    if kind == "greater_than_equal":
        return loc, f"{where}: must be at least {ctx.get('ge')}"
    if kind == "less_than_equal":
        return loc, f"{where}: must be at most {ctx.get('le')}"
    if kind == "too_short":
        return loc, f"{where}: must have at least {ctx.get('min_length')} entries"
    text = _TYPE_SENTENCES.get(kind) or error["msg"][:1].lower() + error["msg"][1:]
    return loc, f"{where}: {text}"


def _related(a: Loc, b: Loc) -> bool:
    size = min(len(a), len(b))
    return a[:size] == b[:size]


def translate(
    exc: ValidationError, where: Where, substituted: dict[Loc, list[tuple[str, str]]]
) -> ConfigError:
    """The first problem (in file order, where known) as one ConfigError."""
    problems = []
    for order, error in enumerate(exc.errors(include_url=False, include_input=False)):
        loc, body = _sentence(error)
        for used_at, values in substituted.items():
            if _related(used_at, loc):
                for name, value in values:
                    if value:
                        body = body.replace(value, "${" + name + "}")
        line = where.line_of(loc)
        problems.append((line if line is not None else math.inf, order, loc, body, line))
    _, _, loc, body, line = min(problems)
    return where.error(loc, body, line=line)


# --- TOML syntax errors


def toml_error(path: Path, message: str) -> str:
    """tomllib's error message as our sentence: ``FILE: line L, column C: invalid TOML: ...``."""
    reason, position = message, ""
    if m := re.fullmatch(r"(.*?)\s*\(at line (\d+), column (\d+)\)", message, re.DOTALL):
        reason, position = m.group(1), f"line {m.group(2)}, column {m.group(3)}: "
    elif m := re.fullmatch(r"(.*?)\s*\(at end of document\)", message, re.DOTALL):
        reason, position = m.group(1), "at the end of the file: "
    reason = reason[:1].lower() + reason[1:]
    return " ".join(f"{path}: {position}invalid TOML: {reason}".split())
