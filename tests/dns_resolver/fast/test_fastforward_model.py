"""C's handling of upstream answers against the Python rules it replays (model test).

For generated upstream answers (TTLs around the clamps and past 2^31, NXDOMAIN/NODATA
with and without SOA, OPT or not, AA, additional records, CNAMEs), a query forwarded
through `FastPath` over real loopback sockets must get exactly the bytes the Python chain
makes of the same answer (`wire.strip_opt`, `Cache.store`, `render`/`wire.adopt`,
`edns.finish`), and C must have cached it exactly when `Cache.store` does. With text
rules (a stand-in rule that applies to any name with a `q`), an answer whose CNAME
targets the rule applies to must be handed to Python, and any other finished in C.
"""

from __future__ import annotations

import itertools
import select
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dns_resolver import edns, wire
from dns_resolver.fast import fastpath
from dns_resolver.steps.blocking import Blocker
from dns_resolver.steps.cache import Cache, cache_key, render
from filtercore import ListSpec, Matcher

pytestmark = pytest.mark.skipif(not fastpath.available(), reason="fast path not built")

MIN_TTL, MAX_TTL, NEGATIVE_MAX_TTL = 5, 3600, 600
UDP_SIZE = 1232
TTLS = st.sampled_from([0, 1, 4, 5, 59, 300, 3600, 3601, 86400, 0x7FFFFFFF, 0x80000000,
                        0xFFFFFFFF])
_names = itertools.count()


def q_rule(host: str, mask: int) -> str | None:
    """A stand-in for `Matcher.text_rules_verdict`: applies to names with a `q`."""
    return "q" if "q" in host else None


class Rig:
    """A FastPath with a client, a listener and a fake upstream on loopback sockets."""

    def __init__(self, tmp: Path, text_rules: bool) -> None:
        self.text_rules = text_rules
        empty = tmp / "empty.txt"
        empty.write_text("listed.example\n")
        matcher = Matcher.from_lists([ListSpec(str(empty), category="adult", name="t")])
        self.fp = fastpath.FastPath(UDP_SIZE, 10_000)
        self.fp.set_acl([(4, b"\x7f\x00\x00\x00", 8, 0)], [])
        self.fp.set_matcher(matcher._core, q_rule if text_rules else None)
        self.fp.set_templates(fastpath.block_templates(Blocker()))
        self.fp.set_upstream(UDP_SIZE, 2.0, True, False, MIN_TTL, MAX_TTL, NEGATIVE_MAX_TTL)
        self.socks = [self._udp() for _ in range(4)]
        self.client, self.listener, self.upstream, self.out = self.socks
        self.listener.setblocking(False)
        self.out.setblocking(False)
        self.out.connect(self.upstream.getsockname())
        self.slot = self.fp.add_socket(self.out.fileno())

    @staticmethod
    def _udp() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.settimeout(2.0)
        return s

    def ask(self, data: bytes) -> bytes | None:
        """Send a client query; the query C sent upstream, or None if C answered."""
        self.client.sendto(data, self.listener.getsockname())
        assert select.select([self.listener], [], [], 2.0)[0]
        assert self.fp.serve(self.listener.fileno()) == ()
        ready = select.select([self.upstream, self.client], [], [], 2.0)[0]
        assert ready
        return self.upstream.recv(4096) if self.upstream in ready else None

    def answer(self, response: bytes) -> bytes:
        assert self.reply(response) == []
        return self.client.recv(65535)

    def reply(self, response: bytes) -> list[tuple[object, ...]]:
        """Send the upstream's answer; what C hands to Python."""
        self.upstream.sendto(response, self.out.getsockname())
        assert select.select([self.out], [], [], 2.0)[0]
        return list(self.fp.serve_upstream(self.slot))

    def close(self) -> None:
        self.fp.release_socket(self.slot)
        for s in self.socks:
            s.close()


@pytest.fixture(scope="module", params=[False, True], ids=["lists", "text-rules"])
def rig(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[Rig]:
    r = Rig(tmp_path_factory.mktemp("rig"), request.param)
    yield r
    r.close()


def _soa(ttl: int, minimum: int) -> bytes:
    rdata = b"\x00\x00" + struct.pack("!IIIII", 1, 7200, 3600, 1209600, minimum)
    return wire.rr(b"\x00", wire.TYPE_SOA, ttl, rdata)


RECORD = st.one_of(
    st.tuples(st.just(1), st.just(wire.TYPE_A), TTLS, st.binary(min_size=4, max_size=4)),
    st.tuples(st.just(1), st.just(wire.TYPE_TXT), TTLS, st.binary(min_size=1, max_size=40)
              .map(lambda b: bytes([len(b)]) + b)),
    st.tuples(st.just(1), st.just(wire.TYPE_CNAME), TTLS,
              st.from_regex(r"\A[a-z]{1,10}\.example\Z").map(wire.encode_name)),
    st.tuples(st.just(3), st.just(wire.TYPE_A), TTLS, st.binary(min_size=4, max_size=4)),
)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    records=st.lists(RECORD, max_size=5),
    rcode=st.sampled_from([wire.NOERROR, wire.NXDOMAIN]),
    soa=st.one_of(st.none(), st.tuples(TTLS, TTLS)),
    opt=st.booleans(),
    aa=st.booleans(),
    client_edns=st.sampled_from([None, 512, 1232, 4096]),
    do=st.booleans(),
)
def test_c_finishes_answers_as_python_does(
    rig: Rig, records: list[tuple[int, int, int, bytes]], rcode: int,
    soa: tuple[int, int] | None, opt: bool, aa: bool, client_edns: int | None, do: bool,
) -> None:
    name = f"n{next(_names)}.Model.Example"
    question = wire.encode_name(name) + struct.pack("!HH", wire.TYPE_A, wire.CLASS_IN)
    client_opt = edns.build_opt(client_edns, do=do) if client_edns is not None else b""
    data = wire.header(0xABCD, wire.RD, 1, 0, 0, 1 if client_opt else 0) + question + client_opt
    sent = rig.ask(data)
    assert sent is not None and sent[12 : 12 + len(question)] == question
    sections = {1: [], 2: [], 3: []}  # type: dict[int, list[bytes]]
    for section, rtype, ttl, rdata in records:
        sections[section].append(wire.rr(wire.QNAME_POINTER, rtype, ttl, rdata))
    if soa is not None:
        sections[2].append(_soa(*soa))
    additional = sections[3] + ([edns.build_opt(1232)] if opt else [])
    flags = wire.QR | wire.RD | (wire.AA if aa else 0) | rcode
    response = (
        wire.header(struct.unpack("!H", sent[:2])[0], flags, 1, len(sections[1]),
                    len(sections[2]), len(additional))
        + sent[12 : 12 + len(question)]
        + b"".join(sections[1] + sections[2] + additional)
    )
    if rig.text_rules and any(b"q" in rdata for section, rtype, _, rdata in records
                              if section == 1 and rtype == wire.TYPE_CNAME):
        handed = rig.reply(response)
        assert [(h[0], fastpath.REASONS[h[3]], h[5]) for h in handed] == [  # type: ignore[index]
            (data, "answer", response)]
        assert 0 <= handed[0][6] < 2.0  # type: ignore[operator]  # seconds it waited in C
        return
    got = rig.answer(response)

    # What the Python chain makes of the same answer.
    query = wire.parse_query(data)
    body, kept = wire.strip_opt(response)
    cache = Cache(10_000, min_ttl=MIN_TTL, max_ttl=MAX_TTL, negative_max_ttl=NEGATIVE_MAX_TTL)
    entry = cache.store(cache_key(query), body, kept)
    made = render(entry, query, 0) if entry is not None else bytes(wire.adopt(body, query))
    limit = edns.udp_limit(query.edns, UDP_SIZE)
    assert got == edns.finish(made, query.edns, limit=limit, udp_size=UDP_SIZE)
    # Cached in C exactly when Python caches it: then the next ask never leaves C.
    again = rig.ask(data)
    assert (again is None) == (entry is not None)
    if again is None:
        rig.client.recv(65535)
    else:
        rig.answer(again[:2] + response[2:])  # let the second forward finish
