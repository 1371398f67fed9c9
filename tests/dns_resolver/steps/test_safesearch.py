"""Safe search: which hosts are rewritten to which target, and the CNAME answer with the
target's records resolved through a real upstream (NSD serving the target zones)."""

from __future__ import annotations

from pathlib import Path

import dns.message
import dns.rdatatype
import pytest

from dns_resolver.steps import safesearch
from tests.dns_resolver.harness import NsdServer
from tests.dns_resolver.policy_helpers import make_config, make_resolver, resolve
from tests.dns_resolver.policy_zone import (
    BING_STRICT_A,
    DDG_SAFE_A,
    GOOGLE_SAFE_A,
    GOOGLE_SAFE_AAAA,
    YOUTUBE_MODERATE_A,
    YOUTUBE_STRICT_A,
)


def test_google_list_covers_the_country_domains() -> None:
    hosts = safesearch.google_hosts()
    assert len(hosts) > 180
    for host in ("www.google.com", "www.google.fr", "www.google.co.uk", "www.google.com.br"):
        assert host in hosts
    assert all(h.startswith("www.google.") for h in hosts)


def test_switches() -> None:
    both = safesearch.rewrites(search=True, youtube="moderate")
    assert both["www.google.de"] == "forcesafesearch.google.com"
    assert both["www.bing.com"] == "strict.bing.com"
    assert both["start.duckduckgo.com"] == both["duckduckgo.com"] == "safe.duckduckgo.com"
    assert both["www.ecosia.org"] == "strict-safe-search.ecosia.org"
    assert both["pixabay.com"] == "safesearch.pixabay.com"
    assert both["youtubei.googleapis.com"] == "restrictmoderate.youtube.com"
    # YouTube is its own switch.
    search_only = safesearch.rewrites(search=True, youtube="off")
    assert "www.youtube.com" not in search_only
    youtube_only = safesearch.rewrites(search=False, youtube="strict")
    assert set(youtube_only) == set(safesearch.YOUTUBE_HOSTS)
    assert set(youtube_only.values()) == {"restrict.youtube.com"}


POLICY = """
[policies.child]
clients = ["127.0.0.2/32"]
safe_search = true
youtube = "{youtube}"

[policies.default]
"""


@pytest.mark.parametrize(
    ("name", "qtype", "target", "address"),
    [
        ("www.google.fr", "A", "forcesafesearch.google.com.", GOOGLE_SAFE_A),
        ("WWW.Google.Com", "AAAA", "forcesafesearch.google.com.", GOOGLE_SAFE_AAAA),
        ("www.bing.com", "A", "strict.bing.com.", BING_STRICT_A),
        ("start.duckduckgo.com", "A", "safe.duckduckgo.com.", DDG_SAFE_A),
        ("m.youtube.com", "A", "restrictmoderate.youtube.com.", YOUTUBE_MODERATE_A),
    ],
)
def test_cname_and_target_addresses(
    tmp_path: Path, policy_nsd: NsdServer, name: str, qtype: str, target: str, address: str
) -> None:
    config = make_config(tmp_path, POLICY.format(youtube="moderate"), policy_nsd.upstream)
    resolver = make_resolver(config)
    msg = dns.message.from_wire(resolve(resolver, name, "127.0.0.2", qtype=qtype))
    assert msg.question[0].name.to_text() == name + "."  # the client's case is kept
    cname = [r for r in msg.answer if r.rdtype == dns.rdatatype.CNAME]
    assert cname and cname[0].name.to_text().lower() == name.lower() + "."
    assert cname[0][0].target.to_text() == target
    rdtype = dns.rdatatype.from_text(qtype)
    addresses = [r for r in msg.answer if r.rdtype == rdtype]
    assert addresses[0].name.to_text() == target
    assert addresses[0][0].to_text() == address
    # A second query is served from the cache, unchanged.
    again = dns.message.from_wire(resolve(resolver, name, "127.0.0.2", qtype=qtype))
    assert [r.to_text() for r in again.answer][0].split()[-1] == target


def test_strict_youtube_and_other_clients(tmp_path: Path, policy_nsd: NsdServer) -> None:
    config = make_config(tmp_path, POLICY.format(youtube="strict"), policy_nsd.upstream)
    resolver = make_resolver(config)
    msg = dns.message.from_wire(resolve(resolver, "www.youtube.com", "127.0.0.2"))
    assert msg.answer[0][0].target.to_text() == "restrict.youtube.com."
    assert msg.answer[1][0].to_text() == YOUTUBE_STRICT_A
    # The default policy is not rewritten: the real name is resolved.
    plain = dns.message.from_wire(resolve(resolver, "www.youtube.com", "127.0.0.1"))
    assert [r.rdtype for r in plain.answer] == [dns.rdatatype.A]
    assert plain.answer[0][0].to_text() == "192.0.2.2"
