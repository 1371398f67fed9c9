"""Upstream zones holding the safe-search targets, for policy tests.

NSD serves these next to `TestZone` (see `NsdServer(extra_zones=...)` and the
`policy_nsd` fixture), so a rewritten query's CNAME target is resolved through a real
upstream. Addresses are from the documentation ranges, so nothing can leak out.
"""

from __future__ import annotations

GOOGLE_SAFE_A = "192.0.2.120"
GOOGLE_SAFE_AAAA = "2001:db8::120"
YOUTUBE_MODERATE_A = "192.0.2.119"
YOUTUBE_STRICT_A = "192.0.2.118"
BING_STRICT_A = "192.0.2.220"
DDG_SAFE_A = "192.0.2.215"


def _zone(origin: str, records: str) -> str:
    return f"""$ORIGIN {origin}
$TTL 300
@ 3600 IN SOA ns1 hostmaster 2024010101 3600 600 86400 60
@ IN NS ns1
ns1 IN A 127.0.0.1
{records}
"""


SAFE_SEARCH_ZONES: dict[str, str] = {
    "google.com.": _zone(
        "google.com.",
        f"forcesafesearch IN A {GOOGLE_SAFE_A}\nforcesafesearch IN AAAA {GOOGLE_SAFE_AAAA}\n"
        "www IN A 192.0.2.1\n",
    ),
    "youtube.com.": _zone(
        "youtube.com.",
        f"restrictmoderate IN A {YOUTUBE_MODERATE_A}\nrestrict IN A {YOUTUBE_STRICT_A}\n"
        "www IN A 192.0.2.2\n",
    ),
    "bing.com.": _zone("bing.com.", f"strict IN A {BING_STRICT_A}\nwww IN A 192.0.2.3\n"),
    "duckduckgo.com.": _zone("duckduckgo.com.", f"safe IN A {DDG_SAFE_A}\n@ IN A 192.0.2.4\n"),
}
