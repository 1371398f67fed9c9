"""Unit tests for dns_resolver.resolver: the pipeline with a fake matcher and the fault
upstream (real sockets, in-process)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
from prometheus_client import generate_latest

from dns_resolver import edns, wire
from dns_resolver.observability.metrics import Metrics
from dns_resolver.resolver import Pending, Resolver
from dns_resolver.steps.acl import Acl
from dns_resolver.steps.cache import Cache
from dns_resolver.upstreams.upstream import Forwarder
from tests.dns_resolver.fakes import FakeMatcher
from tests.dns_resolver.harness import FaultUpstream, sample_value

MATCHER = FakeMatcher(domains={"blocked.example": "adult"}, ips={"192.0.2.66": "adult"},
                      allow=("allowed.blocked.example",))


def make(up: FaultUpstream, **kwargs: object) -> Resolver:
    fwd = Forwarder([(up.address, up.port)], timeout=0.3)
    kwargs.setdefault("cache", Cache())
    return Resolver(MATCHER, fwd, **kwargs)  # type: ignore[arg-type]


def ask(
    resolver: Resolver, data: bytes, client: str = "127.0.0.1", tcp: bool = False
) -> bytes | None:
    async def go() -> bytes | None:
        out = resolver.handle(data, client, tcp)
        if isinstance(out, Pending):
            return await resolver.resolve(out)
        return out

    return asyncio.run(go())


def q(name: str, qtype: str = "A", **kwargs: object) -> bytes:
    return dns.message.make_query(name, qtype, **kwargs).to_wire()  # type: ignore[arg-type]


def test_forward_then_cache(fault_upstream: FaultUpstream) -> None:
    metrics = Metrics()
    resolver = make(fault_upstream, metrics=metrics)
    first = dns.message.from_wire(ask(resolver, q("www.example.com")))  # type: ignore[arg-type]
    assert first.answer[0][0].to_text() == "192.0.2.53"
    assert first.flags & dns.flags.RA
    second = ask(resolver, q("WWW.example.com"))
    assert second is not None
    assert fault_upstream.count == 1
    assert b"WWW" in second
    exposition = generate_latest(metrics.registry).decode()
    assert sample_value(exposition, "filterdns_queries_total", result="allowed") == 1
    assert sample_value(exposition, "filterdns_queries_total", result="cached") == 1
    assert sample_value(exposition, "filterdns_cache_hits_total") == 1


def test_blocked_name_never_reaches_upstream(fault_upstream: FaultUpstream) -> None:
    resolver = make(fault_upstream)
    out = ask(resolver, q("www.blocked.example", use_edns=0))
    assert out is not None
    msg = dns.message.from_wire(out)
    assert msg.rcode() == dns.rcode.NXDOMAIN
    assert edns.ede_codes(out) == [(15, "blocked: category=adult list=test rule=blocked.example")]
    assert fault_upstream.count == 0


def test_explicit_allow_skips_inspection(fault_upstream: FaultUpstream) -> None:
    fault_upstream.answer_ip = "192.0.2.66"
    resolver = make(fault_upstream)
    msg = dns.message.from_wire(ask(resolver, q("allowed.blocked.example")))  # type: ignore[arg-type]
    assert msg.answer
    # An unlisted name answered with a listed address is blocked by inspection, and cached.
    out = ask(resolver, q("innocent.example", use_edns=0))
    assert out is not None and dns.message.from_wire(out).rcode() == dns.rcode.NXDOMAIN
    assert "via=address=192.0.2.66" in edns.ede_codes(out)[0][1]
    again = ask(resolver, q("innocent.example", use_edns=0))
    assert again is not None and edns.ede_codes(again)[0][0] == 15
    assert fault_upstream.count == 2


def test_acl_refuses(fault_upstream: FaultUpstream) -> None:
    resolver = make(fault_upstream, acl=Acl(["127.0.0.0/8"], ["127.0.0.2/32"]))
    out = ask(resolver, q("www.example.com"), client="127.0.0.2")
    assert out is not None and dns.message.from_wire(out).rcode() == dns.rcode.REFUSED
    assert ask(resolver, b"garbage", client="127.0.0.2") is None
    assert fault_upstream.count == 0


def test_malformed_queries(fault_upstream: FaultUpstream) -> None:
    resolver = make(fault_upstream)
    assert ask(resolver, b"\x00\x01") is None
    out = ask(resolver, b"\x00\x07" + b"\x00" * 10)
    assert out is not None and out[3] & 0xF == wire.FORMERR and out[:2] == b"\x00\x07"
    out = ask(resolver, q("x.example", use_edns=1))
    assert out is not None and dns.message.from_wire(out).rcode() == dns.rcode.BADVERS
    notify = dns.message.make_query("x.example", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    out = ask(resolver, notify.to_wire())
    assert out is not None and out[3] & 0xF == wire.NOTIMP


def test_unknown_option_ignored(fault_upstream: FaultUpstream) -> None:
    resolver = make(fault_upstream)
    opt = dns.edns.GenericOption(65000, b"\xab\xcd")
    out = ask(resolver, q("www.example.com", use_edns=0, options=[opt]))
    assert out is not None
    msg = dns.message.from_wire(out)
    assert msg.rcode() == dns.rcode.NOERROR and not msg.options


def test_upstream_failure_is_servfail(
    make_fault_upstream: Callable[..., FaultUpstream],
) -> None:
    up = make_fault_upstream(answer_ttl=1)
    cache = Cache(serve_stale=True, stale_answer_ttl=30)
    resolver = make(up, cache=cache)
    assert ask(resolver, q("www.example.com")) is not None
    up.mode = "timeout"
    out = ask(resolver, q("other.example", use_edns=0))
    assert out is not None and dns.message.from_wire(out).rcode() == dns.rcode.SERVFAIL
    assert edns.ede_codes(out)[0][0] == edns.EDE_NO_REACHABLE_AUTHORITY


def test_stale_answer(make_fault_upstream: Callable[..., FaultUpstream]) -> None:
    up = make_fault_upstream(answer_ttl=1)
    now = [1000.0]
    cache = Cache(serve_stale=True, stale_answer_ttl=30, clock=lambda: now[0])
    resolver = make(up, cache=cache)
    ask(resolver, q("www.example.com"))
    up.mode = "servfail"
    now[0] += 5
    out = ask(resolver, q("www.example.com", use_edns=0))
    assert out is not None
    msg = dns.message.from_wire(out)
    assert msg.rcode() == dns.rcode.NOERROR and msg.answer[0].ttl == 30
    assert edns.ede_codes(out) == [(edns.EDE_STALE_ANSWER, "")]


def test_handler_errors_become_servfail(fault_upstream: FaultUpstream) -> None:
    resolver = make(fault_upstream)
    out = resolver.servfail_for(q("www.example.com"))
    assert out is not None and dns.message.from_wire(out).rcode() == dns.rcode.SERVFAIL
    assert resolver.servfail_for(b"\x00") is None


def test_prefetch_refreshes_a_popular_entry(
    make_fault_upstream: Callable[..., FaultUpstream],
) -> None:
    up = make_fault_upstream(answer_ttl=100)
    now = [1000.0]
    cache = Cache(prefetch=True, prefetch_threshold=0.1, prefetch_min_hits=2,
                  clock=lambda: now[0])
    resolver = make(up, cache=cache)

    async def scenario() -> None:
        async def ask_async() -> bytes:
            out = resolver.handle(q("pop.example"), "127.0.0.1", False)
            if isinstance(out, Pending):
                return await resolver.resolve(out)
            assert out is not None
            return out

        await ask_async()
        await ask_async()
        now[0] += 95  # 5 s left of 100: inside the prefetch window
        stale_soon = dns.message.from_wire(await ask_async())
        assert stale_soon.answer[0].ttl == 5
        for _ in range(50):  # the refresh runs in the background
            if up.count == 2:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)
        fresh = dns.message.from_wire(await ask_async())
        assert fresh.answer[0].ttl == 100

    asyncio.run(scenario())
    assert up.count == 2
