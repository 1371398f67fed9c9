"""squidGuard URL rule semantics, as UT1 `urls` files expect them.

A URL rule is `host/path`. Both the rule and the URL checked against it are reduced the
same way by `split_squidguard_url`:

- the scheme (`http://`), user-info (`user:pass@`), port (`:8080`) and fragment (`#top`)
  are dropped;
- a leading `www`, `web` or `ftp` label, with optional digits (`www2.`), is dropped, as
  squidGuard does, unless it would leave a single-label host (`www.com` stays);
- the host is normalised like any name (`normalize_name`) or address (`normalize_ip`);
- the path is lower-cased (squidGuard lower-cases the request URL, and UT1 rules carry
  mixed case), a missing path is empty, and trailing slashes of a rule are dropped
  (`a.com/x/` and `a.com/x` are the same rule);
- the query string is kept: squidGuard matches rules as prefixes of the whole request
  path, query included, and UT1 rules such as `gosexy.it/index.php?` rely on it.

A rule then matches a URL when the hosts are equal and the rule's path is a prefix of the
URL's path ending on a boundary: the paths are equal, or the next URL character is `/`,
`?`, `&` or `;`, or the rule's path itself ends with `?`, `&` or `=`. So `a.com/x`
matches `a.com/x`, `a.com/x/y` and `a.com/x?q`, but not `a.com/xy`. A rule with no path
(`a.com`) matches every URL of that host.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from filtercore.errors import InvalidNameError, InvalidURLError
from filtercore.normalize import normalize_ip, normalize_name

_SCHEME = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://")
_STRIPPED_LABEL = re.compile(r"(?:www|web|ftp)[0-9]*\.")
_URL_BOUNDARY = frozenset("/?&;")
_RULE_ENDS_OPEN = ("?", "&", "=")


def split_squidguard_url(url: str, *, strip_label: bool = True) -> tuple[str, str]:
    """Reduce a URL or URL rule to `(host, path)` the way squidGuard compares them.

    With `strip_label=False` the leading `www`/`web`/`ftp` label is kept: that is the
    host to look up in domain lists, where `www.example.com` may be listed on its own.

    >>> split_squidguard_url("https://user@WWW2.Example.com:8443/Path/x?q=1#frag")
    ('example.com', '/path/x?q=1')
    >>> split_squidguard_url("example.com")
    ('example.com', '')

    Raises:
        InvalidURLError: empty URL, or a host that is not a valid name or address.
    """
    text = url.strip()
    match = _SCHEME.match(text)
    if match:
        text = text[match.end() :]
    text = text.split("#", 1)[0]
    cut = len(text)
    for separator in "/?":
        at = text.find(separator)
        if 0 <= at < cut:
            cut = at
    authority, path = text[:cut], text[cut:]
    if "@" in authority:
        authority = authority.rsplit("@", 1)[1]
    host = _strip_port(authority)
    if not host:
        raise InvalidURLError(url, "no host")
    address = normalize_ip(host)
    if address is None:
        try:
            host = normalize_name(host)
        except InvalidNameError as exc:
            raise InvalidURLError(url, f"host: {exc.reason}") from None
        label = _STRIPPED_LABEL.match(host) if strip_label else None
        if label and "." in host[label.end() :]:
            host = host[label.end() :]
    else:
        host = address
    if path.startswith("?"):
        path = "/" + path
    return host, path.lower()


def _strip_port(authority: str) -> str:
    """Drop `:port` from a host, leaving bracketed IPv6 addresses intact."""
    if authority.startswith("["):
        end = authority.find("]")
        return authority[: end + 1] if end > 0 else authority
    if authority.count(":") == 1:
        return authority.split(":", 1)[0]
    return authority


def rule_value(rule: str) -> str:
    """The stored form of a URL rule, `host/path` (Entry.value for Kind.URL entries).

    Raises:
        InvalidURLError: as `split_squidguard_url`.
    """
    host, path = split_squidguard_url(rule)
    return host + path.rstrip("/")


class UrlRules:
    """URL rules indexed by host, each host's paths tried longest first.

    >>> rules = UrlRules([("example.com/x", 0), ("example.com/x/y", 1)])
    >>> rules.match("http://www.example.com/x/y/z"), rules.match("http://example.com/xy")
    (1, None)
    """

    __slots__ = ("_by_host",)

    def __init__(self, rules: Iterable[tuple[str, int]]) -> None:
        """Index `(value, rule_index)` pairs; values are `rule_value` forms (`host/path`)."""
        by_host: dict[str, list[tuple[str, int]]] = {}
        for value, index in rules:
            # Values are already in `rule_value` form: the host ends at the first / or ?.
            cut = min((i for i in (value.find("/"), value.find("?")) if i >= 0), default=len(value))
            host, path = value[:cut], value[cut:]
            by_host.setdefault(host, []).append((path.rstrip("/"), index))
        for paths in by_host.values():
            # Longest first; at equal length the earlier rule wins (stable sort).
            paths.sort(key=lambda item: -len(item[0]))
        self._by_host = by_host

    def __len__(self) -> int:
        return sum(len(paths) for paths in self._by_host.values())

    def match(self, url: str) -> int | None:
        """The index of the longest rule matching `url`, or None.

        Raises:
            InvalidURLError: the URL has no valid host.
        """
        host, path = split_squidguard_url(url)
        paths = self._by_host.get(host)
        if not paths:
            return None
        for prefix, index in paths:
            if path_matches(prefix, path):
                return index
        return None


def path_matches(prefix: str, path: str) -> bool:
    """True when rule path `prefix` (no trailing slash) covers URL path `path`."""
    if not prefix:
        return True
    if not path.startswith(prefix):
        return False
    return (
        len(path) == len(prefix)
        or path[len(prefix)] in _URL_BOUNDARY
        or prefix.endswith(_RULE_ENDS_OPEN)
    )
