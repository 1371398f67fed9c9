"""Safe search and restricted modes: which search hosts are rewritten to which target.

A policy with safe search on answers a query for a search host with a CNAME to the
engine's safe host plus that host's addresses, resolved through the upstream (the client
keeps talking to the real engine, which serves the safe results to anyone who reaches it
under that name). Targets are the ones the engines publish for network operators:

- Google: every `www.google.<ccTLD>` (`lists/google-domains.txt`, from
  https://www.google.com/supported_domains) -> `forcesafesearch.google.com`.
- Bing: `www.bing.com` -> `strict.bing.com`.
- DuckDuckGo: `duckduckgo.com`, `www.duckduckgo.com`, `start.duckduckgo.com` ->
  `safe.duckduckgo.com`.
- Ecosia: `www.ecosia.org` -> `strict-safe-search.ecosia.org`; Pixabay: `pixabay.com`,
  `www.pixabay.com` -> `safesearch.pixabay.com` (the targets AdGuard's safe-search list
  uses for them).
- YouTube is its own switch (people who want safe search often do not want YouTube
  restricted): `www.youtube.com`, `m.youtube.com`, `youtubei.googleapis.com`,
  `youtube.googleapis.com`, `www.youtube-nocookie.com` -> `restrictmoderate.youtube.com`
  (moderate) or `restrict.youtube.com` (strict).

Engines without a safe mode that DNS can enforce are in `UNSAFE_ENGINES`; a policy's
`block_unsafe_search` blocks them.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from dns_resolver import wire

GOOGLE_TARGET = "forcesafesearch.google.com"
BING = {"www.bing.com": "strict.bing.com"}
DUCKDUCKGO = dict.fromkeys(
    ("duckduckgo.com", "www.duckduckgo.com", "start.duckduckgo.com"), "safe.duckduckgo.com"
)
ECOSIA = {"www.ecosia.org": "strict-safe-search.ecosia.org"}
PIXABAY = dict.fromkeys(("pixabay.com", "www.pixabay.com"), "safesearch.pixabay.com")
YOUTUBE_HOSTS = (
    "www.youtube.com",
    "m.youtube.com",
    "youtubei.googleapis.com",
    "youtube.googleapis.com",
    "www.youtube-nocookie.com",
)
YOUTUBE_TARGETS = {"moderate": "restrictmoderate.youtube.com", "strict": "restrict.youtube.com"}
REWRITE_TTL = 300

UNSAFE_ENGINES = (
    "search.yahoo.com",
    "search.aol.com",
    "www.ask.com",
    "yandex.com",
    "yandex.ru",
    "www.baidu.com",
    "search.brave.com",
    "www.startpage.com",
    "www.qwant.com",
    "www.mojeek.com",
    "you.com",
)
"""Search hosts with no safe mode filterdns can force by DNS (blocked on request)."""


def _google_file() -> Path:
    return Path(__file__).resolve().parent.parent / "lists" / "google-domains.txt"


@functools.cache
def google_hosts() -> tuple[str, ...]:
    """The Google search hosts of the bundled list (comments and blank lines skipped)."""
    try:
        import importlib.resources

        text = (importlib.resources.files("filterdns.lists") / "google-domains.txt").read_text()
    except (ModuleNotFoundError, FileNotFoundError):
        text = _google_file().read_text(encoding="utf-8")
    return tuple(
        line.strip().lower()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )


def rewrites(*, search: bool, youtube: str) -> dict[str, str]:
    """Query name -> CNAME target for a policy's switches (exact names only)."""
    out: dict[str, str] = {}
    if search:
        out.update(dict.fromkeys(google_hosts(), GOOGLE_TARGET))
        for table in (BING, DUCKDUCKGO, ECOSIA, PIXABAY):
            out.update(table)
    if youtube != "off":
        out.update(dict.fromkeys(YOUTUBE_HOSTS, YOUTUBE_TARGETS[youtube]))
    return out


# -- answering a rewritten query ---------------------------------------------------------

_KEPT_TYPES = (wire.TYPE_A, wire.TYPE_AAAA, wire.TYPE_CNAME)


def safesearch_query(query: wire.Query, target: str) -> wire.Query:
    """The query to send upstream for the CNAME target (same type, class, flags, DO)."""
    question = wire.encode_name(target) + wire.pack_u16(query.qtype) + wire.pack_u16(query.qclass)
    return wire.Query(
        query.id, query.flags, target, query.qtype, query.qclass, question, query.edns
    )


def safesearch_answer(query: wire.Query, target: str, response: bytes, policy: Any) -> bytes:
    """The OPT-less answer to `query`: `qname CNAME target` and the target's records.

    The target's address records are copied with their names written out (no compression
    pointers into the upstream message); other record types are left out, as the client
    asked for the search host's addresses. The RCODE is the target's (NXDOMAIN of a
    safe host would be the engine's problem, and the client should see it).

    Raises:
        WireError: the upstream response is malformed.
    """
    body, records = wire.strip_opt(response)
    ttl = policy.ttl if policy is not None else REWRITE_TTL
    parts = [wire.rr(wire.QNAME_POINTER, wire.TYPE_CNAME, ttl, wire.encode_name(target))]
    for record in records:
        if record.section != 1 or record.rtype not in _KEPT_TYPES:
            continue
        owner, _ = wire.read_name(body, record.offset)
        rdata = body[record.rdata_offset : record.end]
        if record.rtype == wire.TYPE_CNAME:
            rdata = wire.encode_name(wire.read_name(body, record.rdata_offset)[0])
        parts.append(
            wire.rr(wire.encode_name(owner), record.rtype, record.ttl, rdata, record.rclass)
        )
    flags = wire.response_flags(query.flags, wire.rcode_of(body))
    return wire.header(query.id, flags, 1, len(parts), 0, 0) + query.question + b"".join(parts)


__all__ = [
    "UNSAFE_ENGINES",
    "google_hosts",
    "rewrites",
    "safesearch_answer",
    "safesearch_query",
]
