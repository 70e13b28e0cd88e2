"""Credentials in URLs: how a URL is shown, and how a text that may quote it is scrubbed.

A URL's userinfo (``user:password@``), its query values and its fragment may each carry a
credential: ``source.base_url`` may hold a password, a sink URL often holds a token
(``?token=...``). Nothing we show, log or store carries them:

- :func:`redact_url` is the one way a URL is shown: ``https://***@host/hook?token=***``,
  or without those parts at all (``drop=True``);
- :func:`scrub_url` cleans a text we did not write (an httpx or aiohttp error message, which
  may quote the request URL in its own spelling) of the URL's credentials;
- :func:`url_secrets` lists them for the log filter (:mod:`trigger_engine.ops.logs`), which
  replaces them in any line.

A value shorter than :data:`MIN_SECRET` characters is redacted inside a URL and in
``name=value`` form, but never as a bare substring: replacing every ``2`` or ``json`` of a
text would mangle it (and break a JSON log line) for no secrecy worth having.

Pure: strings in, strings out.
"""

from __future__ import annotations

from urllib.parse import SplitResult, quote, quote_plus, unquote, unquote_plus, urlsplit

REDACTED = "***"
MIN_SECRET = 6  # characters a credential needs to be scrubbed as a bare substring


def redact_url(url: str, *, drop: bool = False) -> str:
    """``url`` as it may be shown: its userinfo, every query value and the fragment replaced by
    ``***`` (names of query parameters kept), or with ``drop`` left out entirely. A URL with
    none of them is returned unchanged; one that cannot be parsed is shown as ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    _userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at and not parts.query and not parts.fragment:
        return url
    if drop:
        return SplitResult(parts.scheme, hostport, parts.path, "", "").geturl()
    netloc = f"{REDACTED}@{hostport}" if at else hostport
    query = _redact_query(parts.query) if parts.query else ""
    fragment = REDACTED if parts.fragment else ""
    return SplitResult(parts.scheme, netloc, parts.path, query, fragment).geturl()


def path_secret(url: str) -> str | None:
    """The path of ``url`` when it is long enough to be a credential (a Slack-compatible
    incoming webhook's URL carries its token in the path:
    ``/services/T01ABCDEF/B02GHIJKL/<token>``)."""
    try:
        path = urlsplit(url).path
    except ValueError:
        return None
    return path if len(path.strip("/")) >= MIN_SECRET else None


def origin_only(url: str) -> str:
    """``url`` shown without its path, query and credentials: ``https://host/***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    hostport = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{hostport}/{REDACTED}"


def _redact_query(query: str) -> str:
    """``a=1&b=2`` → ``a=***&b=***``; a piece without ``=`` (``?abc123``) is all value."""
    shown = []
    for pair in query.split("&"):
        name, eq, _value = pair.partition("=")
        shown.append(f"{name}={REDACTED}" if eq else (REDACTED if pair else pair))
    return "&".join(shown)


def scrub_url(text: str, url: str) -> str:
    """``text`` (an error message about a request to ``url``) with each of the URL's
    credentials replaced, however the library spelled them (raw, percent-decoded or
    re-encoded): ``user:pw@`` → ``***@``, ``token=v`` → ``token=***``, ``#f`` → ``#***``,
    and a credential of :data:`MIN_SECRET` characters or more wherever it appears."""
    for needle, replacement in _replacements(url):
        text = text.replace(needle, replacement)
    return text


def url_secrets(url: str) -> list[str]:
    """The credentials of ``url`` as bare strings, in every spelling, for a filter that
    replaces substrings: the userinfo and password, each query value, the fragment; only
    those of :data:`MIN_SECRET` characters or more."""
    parts = _parts(url)
    if parts is None:
        return []
    userinfo, password, query, fragment = parts
    found = []
    for value in (userinfo, password, *(value for _name, value in _pairs(query)), fragment):
        if len(unquote_plus(value)) >= MIN_SECRET:  # its length as written by the user
            found += _spellings(value)
    return list(dict.fromkeys(found))


def _parts(url: str) -> tuple[str, str, str, str] | None:
    """``(userinfo, password, query, fragment)``, or None if nothing in ``url`` is secret."""
    try:
        split = urlsplit(url)
    except ValueError:
        return None
    userinfo, at, _hostport = split.netloc.rpartition("@")
    if not at and not split.query and not split.fragment:
        return None
    password = userinfo.partition(":")[2]
    return userinfo, password, split.query, split.fragment


def _pairs(query: str) -> list[tuple[str, str]]:
    """``(name, value)`` per query parameter; a piece without ``=`` is all value."""
    pairs = []
    for pair in query.split("&"):
        name, eq, value = pair.partition("=")
        if pair:
            pairs.append((name, value) if eq else ("", pair))
    return pairs


def _spellings(value: str) -> list[str]:
    """``value`` as written, percent-decoded, and re-encoded the ways libraries do."""
    if not value:
        return []
    decoded = unquote_plus(value)
    return list(
        dict.fromkeys(
            [value, unquote(value), decoded, quote(decoded, safe=""), quote_plus(decoded, safe="")]
        )
    )


def _replacements(url: str) -> list[tuple[str, str]]:
    """``(needle, replacement)`` for :func:`scrub_url`, longest needle first."""
    parts = _parts(url)
    if parts is None:
        return []
    userinfo, _password, query, fragment = parts
    found: dict[str, str] = {}
    for spelling in _spellings(userinfo):
        found[f"{spelling}@"] = f"{REDACTED}@"
    for name, value in _pairs(query):
        for spelling in _spellings(value):
            for sep in "?&":  # a pair is always preceded by one: "t=2" alone is in "attempt=2"
                if name:
                    found[f"{sep}{name}={spelling}"] = f"{sep}{name}={REDACTED}"
                else:
                    found[f"{sep}{spelling}"] = f"{sep}{REDACTED}"
    for spelling in _spellings(fragment):
        found[f"#{spelling}"] = f"#{REDACTED}"
    for secret in url_secrets(url):
        found.setdefault(secret, REDACTED)
    return sorted(found.items(), key=lambda item: len(item[0]), reverse=True)
