"""A tiny in-test matcher for unit tests of the resolver steps (the integration tests use
the real `filtercore.Matcher` through a real `filterdns serve`)."""

from __future__ import annotations

from filtercore.errors import InvalidNameError
from filtercore.verdict import NO_MATCH, Action, RuleKind, Verdict


class FakeMatcher:
    """Blocks listed domains (and names below them) and listed IP literals.

    Names containing a space raise InvalidNameError, like the real matcher does.
    """

    def __init__(
        self,
        domains: dict[str, str] | None = None,
        ips: dict[str, str] | None = None,
        allow: tuple[str, ...] = (),
    ) -> None:
        self.domains = domains or {}
        self.ips = ips or {}
        self.allow = allow
        self.checked: list[str] = []

    def check(self, name: str) -> Verdict:
        self.checked.append(name)
        if " " in name:
            raise InvalidNameError(name, "character not allowed in a host name")
        labels = name.split(".")
        for i in range(len(labels)):
            suffix = ".".join(labels[i:])
            if suffix in self.allow:
                return Verdict(Action.ALLOW, list="allow", rule=suffix, matched=suffix)
            if suffix in self.domains:
                return Verdict(
                    Action.BLOCK, category=self.domains[suffix], list="test", rule=suffix,
                    matched=suffix, kind=RuleKind.DOMAIN,
                )
        return NO_MATCH

    def check_ip(self, address: str) -> Verdict:
        if address in self.ips:
            return Verdict(
                Action.BLOCK, category=self.ips[address], list="test", rule=address,
                matched=address, kind=RuleKind.IP,
            )
        return NO_MATCH
