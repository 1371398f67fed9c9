"""The answer the matcher gives: what to do with a name or URL, and why."""

from __future__ import annotations

import enum
from collections.abc import Callable


class Action(enum.Enum):
    """What a verdict says to do. `NONE` means no rule matched."""

    ALLOW = "allow"
    BLOCK = "block"
    NONE = "none"


class RuleKind(enum.Enum):
    """Which kind of rule decided a verdict."""

    DOMAIN = "domain"  # a plain or wildcard domain entry, matched on a label boundary
    IP = "ip"  # an IPv4/IPv6 literal entry
    HASHED_DOMAIN = "hashed-domain"  # SHA-256 of a normalised name (confidential list)
    URL = "url"  # a host + path-prefix entry (squidGuard `urls` semantics)
    HASHED_URL = "hashed-url"  # SHA-256 of a Safe Browsing URL expression
    KEYWORD = "keyword"  # a keyword hit from the Aho-Corasick automaton
    EXPRESSION = "expression"  # a regular-expression rule


class Verdict:
    """Why a name or URL is allowed or blocked.

    A verdict depends only on the rule that decided it, so the matcher hands out one shared
    instance per rule (and one shared `NO_MATCH`); treat it as immutable.

    Attributes:
        action: allow, block, or none (nothing matched).
        category: the canonical category of the deciding rule (``None`` when nothing matched).
        categories: every canonical category that lists the matched entry (a name may be in
            several lists); ``category`` is the first of them.
        list: the name of the list the rule came from.
        rule: the rule as written in its source (for hashed lists, the digest). Read lazily
            from the source file the first time it is asked for, since keeping the text of
            millions of entries in memory would cost more than the table itself.
        source: the file the rule came from.
        line: the 1-based line number of the rule in ``source`` (0 when not applicable).
        matched: the normalised name, URL expression or keyword that matched.
        kind: which kind of rule decided.
    """

    __slots__ = (
        "action",
        "category",
        "categories",
        "list",
        "source",
        "line",
        "matched",
        "kind",
        "_rule",
        "_read_rule",
    )

    def __init__(
        self,
        action: Action,
        *,
        category: str | None = None,
        categories: tuple[str, ...] = (),
        list: str | None = None,  # noqa: A002 - the public attribute name
        rule: str | None = None,
        source: str | None = None,
        line: int = 0,
        matched: str | None = None,
        kind: RuleKind | None = None,
        read_rule: Callable[[], str | None] | None = None,
    ) -> None:
        self.action = action
        self.category = category
        self.categories = categories or ((category,) if category else ())
        self.list = list
        self.source = source
        self.line = line
        self.matched = matched
        self.kind = kind
        self._rule = rule
        self._read_rule = read_rule

    @property
    def rule(self) -> str | None:
        if self._rule is None and self._read_rule is not None:
            self._rule = self._read_rule()
            self._read_rule = None
        return self._rule

    @property
    def rule_at_hand(self) -> str | None:
        """`rule` if it needs no read from its source (given, or read already), else None."""
        return self._rule

    @property
    def blocked(self) -> bool:
        return self.action is Action.BLOCK

    @property
    def allowed(self) -> bool:
        """True unless blocked: an explicit allow or no matching rule."""
        return self.action is not Action.BLOCK

    def as_dict(self) -> dict[str, object]:
        """The JSON shape of a verdict, as `filterdns check --json` prints it."""
        return {
            "action": self.action.value,
            "category": self.category,
            "categories": list(self.categories),
            "list": self.list,
            "rule": self.rule,
            "source": self.source,
            "line": self.line,
            "matched": self.matched,
            "kind": self.kind.value if self.kind else None,
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Verdict):
            return NotImplemented
        return self.as_dict() == other.as_dict()

    def __hash__(self) -> int:
        return hash((self.action, self.kind, self.matched, self.list, self.line))

    def __repr__(self) -> str:
        if self.action is Action.NONE:
            return "Verdict(action=none)"
        return (
            f"Verdict(action={self.action.value}, category={self.category!r}, "
            f"list={self.list!r}, matched={self.matched!r}, source={self.source!r}, "
            f"line={self.line})"
        )


NO_MATCH = Verdict(Action.NONE)
"""The verdict for a name or URL that no rule matched."""
