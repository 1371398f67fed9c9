"""`[[forward]]`: which upstream servers a domain's queries go to (conditional forwarding)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from typing import Annotated

from fdconfig.fields import Address, Table, Where, doc
from fdconfig.upstream import Server, UpstreamConfig, is_ourselves, parse_server

ROOT = "."
"""The domain of the default upstream set (every name is below it)."""


class ForwardTable(Table):
    """A forwarding rule: the queries for some domains go to some servers."""

    domains: Annotated[
        tuple[str, ...],
        doc(
            "Domains the rule covers: each name and every name below it, on label "
            'boundaries; the most specific rule wins. `"."` is the default upstream set '
            "(as `[upstream] servers`). A rule for a locally served zone (like "
            '`"168.192.in-addr.arpa"` or `"corp.test"`) forwards it instead of answering '
            "NXDOMAIN.",
            min_length=1,
        ),
    ]
    servers: Annotated[
        tuple[str, ...],
        doc(
            "Servers to ask, as in `[upstream] servers` (`ADDR[:PORT]`, "
            "`tls://ADDR[:PORT]#SERVER-NAME`, `https://HOST[:PORT]/PATH`), with "
            "`[upstream]`'s strategy, timeout, health tracking, CA and bootstrap servers.",
            min_length=1,
        ),
    ]
    policies: Annotated[
        tuple[str, ...],
        doc("Policies whose clients the rule applies to (`[policies.NAME]`); empty: all."),
    ] = ()


@dataclass(frozen=True)
class ForwardConfig:
    """One `[[forward]]` rule. `domains` are normalised (`"."` stays `"."`); `policies`
    empty means every client."""

    domains: tuple[str, ...]
    servers: tuple[Server, ...]
    policies: tuple[str, ...] = ()


def build(
    tables: Sequence[ForwardTable],
    where: Where,
    listen: Sequence[Address],
    policy_names: Collection[str],
) -> tuple[ForwardConfig, ...]:
    """The rules in file order. Two rules for the same domain and the same policy are an
    error (neither would be more specific)."""
    from fdconfig.policies import normalize_domain

    out: list[ForwardConfig] = []
    claimed: dict[tuple[str, str], int] = {}
    for i, table in enumerate(tables):
        key = f"forward[{i}]"
        domains = where.each(
            f"{key}.domains",
            table.domains,
            lambda t: ROOT if t.strip() == ROOT else normalize_domain(t),
        )
        servers = where.each(
            f"{key}.servers", table.servers, parse_server
        )
        for j, server in enumerate(servers):
            if isinstance(server, Address) and is_ourselves(server, listen):
                raise where.error(
                    f"{key}.servers[{j}]", f"{server} is one of our own listen addresses"
                )
        for j, name in enumerate(table.policies):
            if name not in policy_names:
                raise where.error(f"{key}.policies[{j}]", f'no policy is named "{name}"')
        for domain in domains:
            for policy in table.policies or ("",):
                other = claimed.setdefault((domain, policy), i)
                if other != i:
                    whom = f" for policy {policy!r}" if policy else ""
                    raise where.error(
                        f"{key}.domains",
                        f'"{domain}" already has a rule{whom} (forward[{other}])',
                    )
        out.append(ForwardConfig(domains, tuple(dict.fromkeys(servers)), table.policies))
    return tuple(out)


def take_default(
    rules: tuple[ForwardConfig, ...],
    ups: UpstreamConfig,
    configured: Sequence[str],
    where: Where,
) -> tuple[UpstreamConfig, tuple[ForwardConfig, ...]]:
    """A `"."` rule for every client is the default upstream set: it becomes
    `[upstream] servers` (which must then be empty) and leaves the rules."""
    for i, rule in enumerate(rules):
        if ROOT not in rule.domains or rule.policies:
            continue
        if configured:
            raise where.error(
                f"forward[{i}].domains",
                '"." is the default upstream set: give it here or in upstream.servers, not both',
            )
        ups = replace(ups, servers=rule.servers, from_resolv_conf=False)
        rest = tuple(d for d in rule.domains if d != ROOT)
        rules = rules[:i] + ((replace(rule, domains=rest),) if rest else ()) + rules[i + 1 :]
        break
    return ups, rules
