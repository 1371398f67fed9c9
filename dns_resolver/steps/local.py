"""Local names and the choice of upstream (docs/local-names.md).

`LocalData` is built from the configuration (and the hosts files it names, read again each
time it is built, so on SIGHUP) and answers, per policy:

- local records (`[local]`, hosts files, `[policies.NAME] records`, automatic PTRs);
- rewrites (`[policies.NAME] rewrite`): the name to resolve instead;
- the route of every other name: the `[[forward]]` rule's `Forwarder`, the default one, or
  NXDOMAIN for a locally served zone (`fdconfig.local.LOCALLY_SERVED`) that no rule
  forwards and `[local] nodefault` does not name. The most specific domain decides; at
  the same domain a rule naming the client's policy beats one for everybody.

Answers built here carry the AA bit and have no OPT record; the resolver inspects them like
upstream answers (a local CNAME to a listed name is blocked) and finishes them.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from dns_resolver import wire
from dns_resolver.steps.bypass import suffixes
from dns_resolver.upstreams.upstream import Forwarder
from fdconfig import Config
from fdconfig.forward import ROOT
from fdconfig.local import LOCALLY_SERVED, TYPES, LocalRecord, read_hosts
from fdconfig.upstream import Server

log = logging.getLogger(__name__)

MAX_CHAIN = 8  # local CNAMEs followed before the answer stops (a loop ends here)


@dataclass(frozen=True)
class Answer:
    """A local answer: the message without OPT, or a `target` still to resolve upstream.

    `target` set: `body` is unused; the answer is `prefix` (a local CNAME chain) followed by
    the target's records. `rename` (a rewrite): the target's records are given back under
    the asked name instead, with `prefix` empty.
    """

    body: bytes = b""
    target: str = ""
    prefix: tuple[bytes, ...] = ()
    rename: bool = False


class LocalData:
    """Local records, rewrites and routes of one configuration (see the module text).

    Args:
        config: the configuration (`local`, `forward`, `policy`, `upstream`).
        default: the default upstream set, the `Forwarder` of `[upstream]`.
        forwarders: the `Forwarder` of each rule's servers (`rule_servers`), built with
            `[upstream]`'s strategy, timeout and health settings.
    """

    def __init__(
        self,
        config: Config,
        default: Forwarder,
        forwarders: Mapping[tuple[Server, ...], Forwarder],
    ) -> None:
        loc = config.local
        self.ttl = loc.ttl
        self.served = LOCALLY_SERVED - set(loc.nodefault)
        records = list(loc.records)
        for path in loc.hosts_files:
            records += read_hosts(path, loc.ttl)
        self.names = _by_name(records, loc.ptr)
        self.policy_names = {
            p.name: _by_name(p.records, loc.ptr) for p in config.policy.policies if p.records
        }
        self.rewrites = {p.name: dict(p.rewrite) for p in config.policy.policies if p.rewrite}
        self.default = default
        self.forwarders_by_servers = forwarders
        # (domain, policy name or "") -> the rule's Forwarder
        self.routes: dict[tuple[str, str], Forwarder] = {}
        for rule in config.forward:
            for domain in rule.domains:
                for policy in rule.policies or ("",):
                    self.routes[(domain, policy)] = forwarders[rule.servers]

    # -- what the fast path must leave to Python ------------------------------------------

    def punt_names(self, policy: str = "") -> set[str]:
        """Names (and everything below them) C must hand to Python for `policy`'s clients."""
        names = set(self.served) | set(self.names) | set(self.policy_names.get(policy, ()))
        names |= {domain for domain, _ in self.routes if domain != ROOT}
        names |= set(self.rewrites.get(policy, ()))
        return names

    def local_names(self, policy: str = "") -> set[str]:
        """Names (and everything below them) answered from local records or rewritten for
        `policy`'s clients: Python's, whatever a rule says."""
        names = set(self.names) | set(self.policy_names.get(policy, ()))
        return names | set(self.rewrites.get(policy, ()))

    def rules_for(self, policy: str) -> dict[str, Forwarder]:
        """Domain (`"."` for the default) -> the rule's `Forwarder` for `policy`'s
        clients: a rule naming the policy beats one for everybody at the same domain."""
        out = {domain: f for (domain, who), f in self.routes.items() if who == ""}
        out.update({domain: f for (domain, who), f in self.routes.items() if who == policy})
        return out

    # -- per query ------------------------------------------------------------------------

    def rewrite(self, name: str, policy: str) -> str | None:
        """The name to resolve instead of `name` (lower case) for `policy`, or None."""
        table = self.rewrites.get(policy)
        if not table:
            return None
        for suffix in suffixes(name):
            target = table.get(suffix)
            if target is not None:
                return name[: len(name) - len(suffix)] + target
        return None

    def route(self, name: str, policy: str) -> Forwarder | str:
        """The `Forwarder` for `name` (lower case), or the locally served zone answering
        it NXDOMAIN."""
        routes = self.routes
        for suffix in suffixes(name) if name else ():
            found = routes.get((suffix, policy)) or routes.get((suffix, ""))
            if found is not None:
                return found
            if suffix in self.served:
                return suffix
        return routes.get((ROOT, policy)) or self.default

    def forwarders(self) -> Iterator[Forwarder]:
        """Every upstream set, the default first (each once)."""
        seen = {id(self.default)}
        yield self.default
        for forwarder in self.routes.values():
            if id(forwarder) not in seen:
                seen.add(id(forwarder))
                yield forwarder

    def answer(self, query: wire.Query, policy: str, name: str = "") -> Answer | None:
        """The local answer to `query` (under `name`'s records, default the query name),
        or None when no local record names it."""
        qname = name or query.qname.lower().rstrip(".")
        found = self._lookup(qname, policy)
        if found is None:
            return None
        qtype = query.qtype
        parts: list[bytes] = []
        owner = wire.QNAME_POINTER
        for _ in range(MAX_CHAIN):
            assert found is not None
            cname = next((r for r in found if r.rtype == TYPES["CNAME"]), None)
            matching = [r for r in found if r.rtype == qtype or qtype == 255]
            if cname is None or qtype == TYPES["CNAME"]:
                parts += [wire.rr(owner, r.rtype, r.ttl, r.rdata) for r in matching]
                break
            parts.append(wire.rr(owner, cname.rtype, cname.ttl, cname.rdata))
            owner = wire.encode_name(cname.target)
            found = self._lookup(cname.target, policy)
            if found is None:
                return Answer(target=cname.target, prefix=tuple(parts))
        return Answer(body=self._message(query, wire.NOERROR, parts, qname))

    def nxdomain(self, query: wire.Query, zone: str) -> bytes:
        """NXDOMAIN from a locally served `zone`, with its SOA (negative TTL: ours)."""
        return self._message(query, wire.NXDOMAIN, [], zone)

    def _lookup(self, name: str, policy: str) -> list[LocalRecord] | None:
        own = self.policy_names.get(policy)
        if own is not None:
            found = own.get(name)
            if found is not None:
                return found
        return self.names.get(name)

    def _message(self, query: wire.Query, rcode: int, answers: list[bytes], zone: str) -> bytes:
        authority = [] if answers else [self._soa(zone)]
        flags = wire.response_flags(query.flags, rcode, aa=True)
        return (
            wire.header(query.id, flags, 1, len(answers), len(authority), 0)
            + query.question
            + b"".join(answers)
            + b"".join(authority)
        )

    def _soa(self, zone: str) -> bytes:
        # As Unbound's locally served zones: a made-up SOA whose MINIMUM is our TTL, so
        # the negative answer is cached as long as a positive local one.
        rdata = (
            wire.encode_name("localhost")
            + wire.encode_name("nobody.invalid")
            + b"".join(wire.pack_u32(v) for v in (1, 3600, 1200, 604800, self.ttl))
        )
        return wire.rr(wire.encode_name(zone), wire.TYPE_SOA, self.ttl, rdata)


def compose(query: wire.Query, answer: Answer, response: bytes) -> bytes:
    """The answer to `query` from the upstream's `response` for `answer.target`: the local
    CNAME chain and the target's answer records, or (a rewrite) the target's answer records
    under the asked name. Names are written out (no pointers into the upstream message);
    the RCODE is the target's.

    Raises:
        WireError: the upstream response is malformed.
    """
    body, records = wire.strip_opt(response)
    target = answer.target
    parts = list(answer.prefix)
    for record in records:
        if record.section != 1:
            continue
        owner, _ = wire.read_name(body, record.offset)
        rdata = body[record.rdata_offset : record.end]
        if record.rtype in (wire.TYPE_CNAME, TYPES["PTR"]):
            rdata = wire.encode_name(wire.read_name(body, record.rdata_offset)[0])
        same = answer.rename and owner.lower().rstrip(".") == target
        name = wire.encode_name(query.qname if same else owner)
        parts.append(wire.rr(name, record.rtype, record.ttl, rdata, record.rclass))
    flags = wire.response_flags(query.flags, wire.rcode_of(body), aa=not answer.rename)
    return wire.header(query.id, flags, 1, len(parts), 0, 0) + query.question + b"".join(parts)


def rule_servers(config: Config) -> list[tuple[Server, ...]]:
    """The distinct server lists of the `[[forward]]` rules (one `Forwarder` each)."""
    return list(dict.fromkeys(rule.servers for rule in config.forward))


def _by_name(records: Sequence[LocalRecord], ptr: bool) -> dict[str, list[LocalRecord]]:
    """Records by owner name, with a PTR for each A/AAAA address (the first name wins, and
    an explicit PTR stays)."""
    out: dict[str, list[LocalRecord]] = {}
    for record in records:
        out.setdefault(record.name, []).append(record)
    if ptr:
        for record in records:
            if record.rtype not in (TYPES["A"], TYPES["AAAA"]):
                continue
            reverse = ipaddress.ip_address(record.rdata).reverse_pointer
            if reverse not in out:
                out[reverse] = [
                    LocalRecord(
                        reverse,
                        TYPES["PTR"],
                        record.ttl,
                        wire.encode_name(record.name),
                        record.name,
                    )
                ]
    return out
