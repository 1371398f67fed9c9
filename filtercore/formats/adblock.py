"""AdBlock-style DNS rules, the subset that names hosts (as in AdGuard DNS / Hagezi lists).

Accepted:

- `||example.com^`: the name and everything below it (Scope.SUBTREE);
- `|example.com^`: the name only (Scope.SELF);
- `@@` before either: an allow rule (`Entry.action` is ALLOW whatever the list's action);
- `||1.2.3.4^`: an address entry (Kind.IP);
- comments: `!` lines, `# ` lines, and the `[Adblock Plus 2.0]` header.

Reported, never guessed at: any `$modifier` (`$important`, `$third-party`, `$client`, ...),
since each changes what a rule means; cosmetic rules (`##`, `#@#`, `#?#`, `#$#`, `#%#`);
rules without `||`/`|` anchor or without the `^` separator (substring or prefix patterns a
host table cannot express); `*` wildcards; `/regex/` rules; URLs with a path; invalid names.
"""

from __future__ import annotations

from filtercore.entries import Entry, Kind, ParsedList, Scope
from filtercore.errors import InvalidNameError
from filtercore.formats._common import parse_each_line, parse_host
from filtercore.verdict import Action

_COSMETIC = ("##", "#@#", "#?#", "#$#", "#%#", "#@$#", "#@%#", "#@?#")


def parse_text(text: str, source: str, out: ParsedList, category: str | None = None) -> None:
    """Parse AdBlock-style rules into `out` (see `formats.TextParser`)."""
    parse_each_line(text, source, out, category, _parse_rule, comments=("!", "["))


def _parse_rule(
    line: str, number: int, source: str, out: ParsedList, category: str | None
) -> str | None:
    """Add the entry one rule states; return why it cannot be used, or None."""
    if line.startswith("#") and not any(marker in line for marker in _COSMETIC):
        return None  # a `# comment` line, as AdGuard Home accepts
    for marker in _COSMETIC:
        if marker in line:
            return f"cosmetic rule ({marker}): not applicable to DNS"
    rule = line
    action = None
    if rule.startswith("@@"):
        action = Action.ALLOW
        rule = rule[2:]
    if rule.startswith("/") and rule.endswith("/") and len(rule) > 1:
        return "regular-expression rule: not supported"
    rule, _, modifiers = rule.partition("$")
    if modifiers:
        names = ", ".join("$" + modifier.strip() for modifier in modifiers.split(","))
        return f"unsupported modifier {names}"
    if rule.startswith("||"):
        scope = Scope.SUBTREE
        rule = rule[2:]
    elif rule.startswith("|"):
        scope = Scope.SELF
        rule = rule[1:]
    else:
        return "no || or | anchor: a substring pattern, not a host rule"
    if rule.endswith("^|"):
        rule = rule[:-2]
    elif rule.endswith("^"):
        rule = rule[:-1]
    else:
        return "no ^ separator after the name: a prefix pattern, not a host rule"
    if "*" in rule:
        return "wildcard pattern: not supported"
    if "/" in rule or "://" in rule or "^" in rule:
        return "URL or path rule: not a host rule"
    try:
        kind, value, _ = parse_host(rule, wildcard=False)
    except InvalidNameError as exc:
        return exc.reason
    if kind is Kind.IP and scope is Scope.SELF:
        scope = Scope.SUBTREE  # an address has nothing below it; keep IP entries uniform
    out.entries.append(
        Entry(kind, value, number, source, action=action, scope=scope, category=category)
    )
    return None
