"""Turns parsed lists into the structures a Matcher consults.

Every list entry lands in one of: the hashed domain table (names and IP literals), the
SHA-256 table (confidential digests of names and of URL expressions), the URL rule index
(squidGuard `urls`), the keyword automaton, or the expression rules. What a verdict must
explain (which list, which category, which line) is kept per *group*: the set of lists a
key belongs to, interned, so millions of keys share a few hundred group records.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from filtercore._table import DomainTable, TableBuilder, run_end
from filtercore.categories import CategoryMap
from filtercore.entries import Entry, Kind, Problem, Scope
from filtercore.errors import FilterError
from filtercore.expressions import ExpressionMatcher
from filtercore.formats import parse_list
from filtercore.keywords import KeywordMatcher
from filtercore.listspec import ListSpec
from filtercore.urlrules import UrlRules
from filtercore.verdict import Action

# Group flags; the same values as the G_* constants in _table.pxd.
ALLOW_SELF, ALLOW_BELOW, BLOCK_SELF, BLOCK_BELOW = 1, 2, 4, 8
MAX_CATEGORIES = 64
MAX_GROUPS = 0x7FFF


@dataclass(frozen=True)
class ListInfo:
    """One list as verdicts name it: a file, or one category folder of a tree."""

    name: str
    source: str  # the file (or `archive!member`) the entries came from
    category: str
    action: Action
    spec_path: str  # what to parse again to find a line the table did not keep
    spec_format: str


@dataclass(frozen=True)
class Group:
    """The lists that share a key, and what the key does for each kind of name."""

    flags: int  # ALLOW_SELF | ALLOW_BELOW | BLOCK_SELF | BLOCK_BELOW, over all its lists
    self_cats: int  # categories of the block lists that cover the name itself
    below_cats: int  # categories of the block lists that cover the names below it
    block_lists: tuple[tuple[int, int], ...]  # (list, Scope) in list order
    allow_lists: tuple[tuple[int, int], ...]
    line_list: int  # the list whose line the table stores for keys of this group
    nodata: bool = False  # RPZ `CNAME *.`: a block that answers NODATA


@dataclass(frozen=True)
class TextRule:
    """A keyword, expression or URL rule, kept whole since there are few of them."""

    list: int
    line: int
    value: str
    action: Action
    kind: Kind
    mode: str = "word"  # keyword boundary mode


@dataclass
class CompiledLists:
    """Everything a Matcher needs, built once from a set of list specs."""

    categories: tuple[str, ...]  # bit i of a category mask is categories[i]
    lists: list[ListInfo]
    groups: list[Group]
    plain: DomainTable
    hashed: DomainTable
    text_rules: list[TextRule]
    problems: list[Problem] = field(default_factory=list)
    problem_count: int = 0  # may exceed len(problems): a snapshot keeps only the first ones
    entry_counts: dict[str, int] = field(default_factory=dict)  # list name -> entries
    url_rules: UrlRules = field(init=False)
    keywords: KeywordMatcher = field(init=False)
    expressions: ExpressionMatcher = field(init=False)
    has_text_rules: bool = field(init=False)
    # Where these lists came from, when loaded from a snapshot (path, created, meta).
    snapshot_meta: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The text matchers are rebuilt from the rules (there are few), not stored: a
        # snapshot then holds data only, never a pickled object.
        urls, keywords, exceptions, expressions = [], [], [], []
        for index, rule in enumerate(self.text_rules):
            if rule.kind is Kind.URL:
                urls.append((rule.value, index))
            elif rule.kind is Kind.KEYWORD:
                keywords.append((rule.value, rule.mode, index))
            elif rule.kind is Kind.KEYWORD_EXCEPTION:
                exceptions.append((rule.value, index))
            elif rule.kind is Kind.EXPRESSION:
                expressions.append((rule.value, index))
        self.url_rules = UrlRules(urls)
        self.keywords = KeywordMatcher(keywords, exceptions)
        self.expressions = ExpressionMatcher(expressions)
        self.has_text_rules = bool(keywords or expressions)

    def category_mask(self, names: Iterable[str]) -> int:
        mask = 0
        for name in names:
            try:
                mask |= 1 << self.categories.index(name)
            except ValueError:
                raise FilterError(f"unknown category {name!r}") from None
        return mask

    def categories_of(self, mask: int) -> tuple[str, ...]:
        return tuple(c for i, c in enumerate(self.categories) if mask >> i & 1)


class _Compiler:
    def __init__(self, category_map: CategoryMap, secret: bytes) -> None:
        self.cmap = category_map
        self.categories: list[str] = list(category_map.names)
        self.lists: list[ListInfo] = []
        self.list_index: dict[tuple[str, str], int] = {}
        self.groups: list[Group] = [Group(0, 0, 0, (), (), -1)]  # group 0: a marker, no entry
        self.group_index: dict[Group, int] = {}
        self.plain = TableBuilder(secret)
        self.hashed = TableBuilder(secret, markers=False)
        self.text_rules: list[TextRule] = []
        self.problems: list[Problem] = []
        self.counts: dict[str, int] = {}

    # -- categories, lists, groups ----------------------------------------------------

    def category_bit(self, category: str) -> int:
        if category not in self.categories:
            if len(self.categories) >= MAX_CATEGORIES:
                raise FilterError(f"more than {MAX_CATEGORIES} categories; cannot add {category!r}")
            self.categories.append(category)
        return 1 << self.categories.index(category)

    def list_for(self, spec: ListSpec, entry: Entry, usage: dict[str, str]) -> int:
        """The list an entry belongs to: the spec itself, or one category folder of it.

        The canonical category is the spec's (mapped), else the folder's (mapped), else the
        list's own name if the map knows it; a list of a white category allows.
        """
        folder = entry.category if spec.category is None else None
        if folder is None:
            name = spec.display_name
            raw = spec.category or spec.display_name
        else:
            name = f"{spec.display_name}/{folder}"
            raw = folder
        key = (name, entry.source)
        index = self.list_index.get(key)
        if index is None:
            category = self.cmap.canonical(raw) or spec.category or folder or "uncategorised"
            white = (folder is not None and usage.get(folder) == "white") or self.cmap.is_white(
                category
            )
            action = Action.ALLOW if white else spec.action
            index = len(self.lists)
            self.lists.append(
                ListInfo(name, entry.source, category, action, spec.path, spec.format)
            )
            self.list_index[key] = index
            self.category_bit(category)
        return index

    def intern(self, group: Group) -> int:
        gid = self.group_index.get(group)
        if gid is None:
            gid = len(self.groups)
            if gid > MAX_GROUPS:
                raise FilterError(f"more than {MAX_GROUPS} distinct list combinations")
            self.groups.append(group)
            self.group_index[group] = gid
        return gid

    def group_for(self, list_id: int, action: Action, scope: Scope, nodata: bool) -> int:
        covers_self, covers_below = bool(scope & Scope.SELF), bool(scope & Scope.BELOW)
        if action is Action.ALLOW:
            flags = (ALLOW_SELF if covers_self else 0) | (ALLOW_BELOW if covers_below else 0)
            return self.intern(Group(flags, 0, 0, (), ((list_id, int(scope)),), list_id))
        flags = (BLOCK_SELF if covers_self else 0) | (BLOCK_BELOW if covers_below else 0)
        bit = self.category_bit(self.lists[list_id].category)
        return self.intern(
            Group(
                flags,
                bit if covers_self else 0,
                bit if covers_below else 0,
                ((list_id, int(scope)),),
                (),
                list_id,
                nodata,
            )
        )

    def merge(self, a: int, b: int) -> int:
        """The group of a key listed with groups a and b (a < b, so a's line is kept)."""
        ga, gb = self.groups[a], self.groups[b]
        return self.intern(
            Group(
                ga.flags | gb.flags,
                ga.self_cats | gb.self_cats,
                ga.below_cats | gb.below_cats,
                ga.block_lists + tuple(i for i in gb.block_lists if i not in ga.block_lists),
                ga.allow_lists + tuple(i for i in gb.allow_lists if i not in ga.allow_lists),
                ga.line_list,
                ga.nodata or gb.nodata,
            )
        )

    # -- entries ------------------------------------------------------------------------

    def add_spec(self, spec: ListSpec) -> None:
        parsed = parse_list(spec.path, spec.format)
        self.problems.extend(parsed.problems)
        entries = parsed.entries
        # Entries come in long runs that share a list and a group (a file, a category
        # folder): resolve those once per run, and hand domain runs to C whole.
        start = 0
        while start < len(entries):
            end = run_end(entries, start)
            first = entries[start]
            list_id = self.list_for(spec, first, parsed.usage)
            action = first.action or self.lists[list_id].action
            gid = self.group_for(list_id, action, first.scope, first.nodata)
            if first.kind is Kind.DOMAIN:
                self.plain.add_name_run(entries, start, end, gid)
            else:
                for i in range(start, end):
                    self.add_entry(entries[i], list_id, gid)
            name = self.lists[list_id].name
            self.counts[name] = self.counts.get(name, 0) + end - start
            start = end

    def add_entry(self, entry: Entry, list_id: int, gid: int) -> None:
        kind = entry.kind
        if kind is Kind.DOMAIN:
            self.plain.add_name(entry.value, gid, entry.line)
        elif kind is Kind.IP:
            self.plain.add_key(self.plain.hash_name(entry.value), gid, entry.line)
        elif kind is Kind.SHA256_DOMAIN or kind is Kind.SHA256_URL:
            self.hashed.add_key(int(entry.value[:16], 16), gid, entry.line)
        else:
            action = entry.action or self.lists[list_id].action
            self.text_rules.append(
                TextRule(list_id, entry.line, entry.value, action, entry.kind, entry.mode)
            )

    def finish(self) -> CompiledLists:
        plain = self.plain.build(self.merge)
        hashed = self.hashed.build(self.merge)
        return CompiledLists(
            categories=tuple(self.categories),
            lists=self.lists,
            groups=self.groups,
            plain=plain,
            hashed=hashed,
            text_rules=self.text_rules,
            problems=self.problems,
            problem_count=len(self.problems),
            entry_counts=self.counts,
        )


def compile_lists(
    specs: Sequence[ListSpec],
    category_map: CategoryMap | None = None,
    secret: bytes | None = None,
) -> CompiledLists:
    """Parse and compile lists, in order (earlier lists explain shared entries first).

    `secret` keys the table's hash (16 bytes); a random one is drawn per build so that
    nobody can craft a name colliding with a listed one. Give one only for reproducible
    tests.
    """
    compiler = _Compiler(category_map or CategoryMap.load(), secret or os.urandom(16))
    for spec in specs:
        # Absolute sources, so a verdict can read its rule back from any directory.
        compiler.add_spec(replace(spec, path=os.path.abspath(spec.path)))
    return compiler.finish()
