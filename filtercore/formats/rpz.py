"""Response Policy Zone (RPZ) files: QNAME triggers with the CNAME actions.

Accepted:

- `name CNAME .`: block, NXDOMAIN, the name only (Scope.SELF);
- `*.name CNAME .`: block the names below `name` (Scope.BELOW). As in RPZ, a list covers a
  whole subtree only with both lines;
- `name CNAME *.`: block with NODATA (`Entry.nodata`);
- `name CNAME rpz-passthru.`: allow (`Entry.action` ALLOW);
- `$ORIGIN`, `$TTL`, SOA and NS records (skipped), optional TTL and class fields, owner
  omitted on continuation lines, parenthesised multi-line records, `;` comments.

Owner names are relative to the zone origin. An absolute owner under the origin has the
origin stripped (`bad.example.rpz.local.` in zone `rpz.local` is `bad.example`). The origin
is `$ORIGIN`, or else the owner of the SOA record when that is absolute; with neither, an
absolute owner is taken as the name itself.

Reported as unsupported: `rpz-drop.`, `rpz-tcp-only.`, CNAME to another name (a walled
garden), local data (A, AAAA, TXT, ... records), IP/NSDNAME/NSIP/client-IP triggers
(`.rpz-ip` etc.), `$INCLUDE`, owners outside the zone, invalid names.
"""

from __future__ import annotations

import contextlib

from filtercore.entries import Entry, Kind, ParsedList, Problem, Scope
from filtercore.errors import InvalidNameError
from filtercore.formats._common import content_lines
from filtercore.normalize import normalize_name
from filtercore.verdict import Action

_CLASSES = frozenset({"IN", "CH", "HS", "CS", "ANY"})
_SKIPPED_TYPES = frozenset({"SOA", "NS", "DNSKEY", "RRSIG", "NSEC", "NSEC3", "NSEC3PARAM"})
_TRIGGER_LABELS = ("rpz-ip", "rpz-nsdname", "rpz-nsip", "rpz-client-ip")
_TTL_UNITS = frozenset("smhdwSMHDW")


def parse_text(text: str, source: str, out: ParsedList, category: str | None = None) -> None:
    """Parse an RPZ zone file into `out` (see `formats.TextParser`)."""
    zone = _Zone(source, out, category)
    pending: list[str] = []  # fields of a parenthesised record spread over lines
    pending_line = 0
    pending_text = ""
    for number, raw in content_lines(text, source, out, comments=(";",), keep_indent=True):
        line = _cut_comment(raw)
        if not line:
            continue
        if pending:
            pending.extend(line.replace("(", " ").replace(")", " ").split())
            if ")" in line:
                zone.record(pending, pending_line, pending_text)
                pending = []
            continue
        if "(" in line and ")" not in line:
            starts_blank = raw[:1].isspace()
            pending = ([""] if starts_blank else []) + line.replace("(", " ").split()
            pending_line, pending_text = number, line
            continue
        fields = line.replace("(", " ").replace(")", " ").split()
        if raw[:1].isspace():
            fields.insert(0, "")  # owner omitted: the previous record's owner
        zone.record(fields, number, line)
    if pending:
        out.problems.append(Problem(source, pending_line, pending_text, "unclosed parenthesis"))


def _cut_comment(line: str) -> str:
    """Drop a `;` comment unless it is inside a quoted TXT string."""
    if ";" not in line:
        return line.strip()
    quoted = False
    for index, char in enumerate(line):
        if char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            return line[:index].strip()
    return line.strip()


class _Zone:
    """Parser state: the origin, the last owner, and where results go."""

    def __init__(self, source: str, out: ParsedList, category: str | None) -> None:
        self.source = source
        self.out = out
        self.category = category
        self.origin: str | None = None
        self.owner = ""

    def problem(self, number: int, text: str, reason: str) -> None:
        self.out.problems.append(Problem(self.source, number, text, reason))

    def record(self, fields: list[str], number: int, text: str) -> None:
        """Handle one logical line: a `$` directive or a resource record."""
        if not fields:
            return
        first = fields[0]
        if first.upper() == "$ORIGIN":
            if len(fields) < 2:
                self.problem(number, text, "$ORIGIN without a name")
                return
            try:
                self.origin = normalize_name(fields[1])
            except InvalidNameError as exc:
                self.problem(number, text, f"$ORIGIN: {exc.reason}")
            return
        if first.upper() == "$TTL":
            return
        if first.startswith("$"):
            self.problem(number, text, f"unsupported directive {first}")
            return
        if first:
            self.owner = first
        owner = self.owner
        rest = fields[1:]
        # Skip the optional TTL and class, in either order.
        while rest and (rest[0].upper() in _CLASSES or _is_ttl(rest[0])):
            rest = rest[1:]
        if not rest:
            self.problem(number, text, "record without a type")
            return
        rtype = rest[0].upper()
        rdata = rest[1:]
        if rtype == "SOA":
            if self.origin is None and owner.endswith(".") and owner != ".":
                # An invalid SOA owner leaves no origin; triggers then say what is wrong.
                with contextlib.suppress(InvalidNameError):
                    self.origin = normalize_name(owner)
            return
        if rtype in _SKIPPED_TYPES:
            return
        if rtype != "CNAME":
            self.problem(number, text, f"local data ({rtype} record): not supported")
            return
        if len(rdata) != 1:
            self.problem(number, text, "CNAME needs exactly one target")
            return
        self.trigger(owner, rdata[0].lower(), number, text)

    def trigger(self, owner: str, target: str, number: int, text: str) -> None:
        """Add the entry for a QNAME trigger `owner` with CNAME action `target`."""
        action: Action | None = None
        nodata = False
        if target == ".":
            pass
        elif target == "*.":
            nodata = True
        elif target == "rpz-passthru.":
            action = Action.ALLOW
        elif target in ("rpz-drop.", "rpz-tcp-only."):
            self.problem(number, text, f"action {target} not supported")
            return
        else:
            self.problem(number, text, f"CNAME to {target} (a walled garden): not supported")
            return
        name = self.relative(owner, number, text)
        if name is None:
            return
        scope = Scope.SELF
        if name == "*" or name.startswith("*."):
            if name == "*":
                self.problem(number, text, "wildcard for the whole zone: not a list entry")
                return
            name = name[2:]
            scope = Scope.BELOW
        last_label = name.rsplit(".", 1)[-1].lower()
        if last_label in _TRIGGER_LABELS:
            self.problem(number, text, f"{last_label} trigger not supported")
            return
        try:
            value = normalize_name(name)
        except InvalidNameError as exc:
            self.problem(number, text, exc.reason)
            return
        self.out.entries.append(
            Entry(
                Kind.DOMAIN,
                value,
                number,
                self.source,
                action=action,
                scope=scope,
                category=self.category,
                nodata=nodata,
            )
        )

    def relative(self, owner: str, number: int, text: str) -> str | None:
        """The trigger name of an owner: relative to the origin, without the origin."""
        if owner == "@":
            self.problem(number, text, "trigger on the zone apex: not a list entry")
            return None
        if not owner.endswith("."):
            return owner
        absolute = owner[:-1].lower()
        if self.origin is None:
            return absolute
        if absolute == self.origin:
            self.problem(number, text, "trigger on the zone apex: not a list entry")
            return None
        suffix = "." + self.origin
        if not absolute.endswith(suffix):
            self.problem(number, text, f"owner outside the zone {self.origin}")
            return None
        return absolute[: -len(suffix)]


def _is_ttl(field: str) -> bool:
    """True for a TTL field: digits, or BIND's `1h30m` unit form."""
    return field[:1].isdigit() and all(char.isdigit() or char in _TTL_UNITS for char in field)
