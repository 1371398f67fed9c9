"""The public matcher: verdicts for names, URLs and IP addresses, with their reasons."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from filtercore import safebrowsing
from filtercore._digest import sha256, sha256_prefix64
from filtercore._table import MatchCore, VerdictCache
from filtercore._table import normalize as _normalize
from filtercore.categories import CategoryMap
from filtercore.compiler import CompiledLists, TextRule, compile_lists
from filtercore.entries import Kind, Problem, Scope
from filtercore.errors import FilterError, InvalidURLError
from filtercore.formats import parse_list
from filtercore.listspec import ListSpec
from filtercore.normalize import normalize_ip
from filtercore.ruletext import read_line
from filtercore.urlrules import split_squidguard_url
from filtercore.verdict import NO_MATCH, Action, RuleKind, Verdict

ALL_CATEGORIES = (1 << 64) - 1


class Matcher:
    """Answers "may this name / URL be reached, and if not, why" over compiled lists.

    Verdict rules (DESIGN.md): names are normalised; a domain entry covers the name and
    every name below it on label boundaries; the most specific entry decides, an allow
    beating a block at equal specificity; keyword and expression rules apply only where no
    domain entry matched. For URLs: a host blocked by a domain entry is blocked whatever the
    path; otherwise URL rules (plain and hashed) decide, then a domain allow, then keyword
    and expression rules on the URL.

    A Matcher is immutable once built and safe to share between threads; a reload builds a
    new one and swaps the reference.

    Every check takes an optional `categories`: the canonical categories to block (a
    policy's choice); block entries of other categories are passed over as if absent.
    """

    def __init__(self, compiled: CompiledLists) -> None:
        self.compiled = compiled
        groups = compiled.groups
        self._core = MatchCore(
            compiled.plain,
            compiled.hashed,
            [g.flags for g in groups],
            [g.self_cats for g in groups],
            [g.below_cats for g in groups],
        )
        self._caches: dict[int, VerdictCache] = {}
        self._cache_all = self._cache_for(ALL_CATEGORIES)
        self._text_verdicts: dict[tuple[int, int, str], Verdict] = {}

    @classmethod
    def from_lists(
        cls,
        specs: Sequence[ListSpec],
        *,
        category_map: CategoryMap | None = None,
        secret: bytes | None = None,
    ) -> Matcher:
        """Parse and compile `specs` into a matcher (see `compile_lists`)."""
        return cls(compile_lists(specs, category_map, secret))

    @classmethod
    def from_snapshot(cls, path: str, *, verify: bool = False) -> Matcher:
        """Load a compiled snapshot (see `filtercore.snapshot`): maps it, parses no text.

        Raises:
            SnapshotError: the file is missing, corrupt or of another format version.
        """
        from filtercore.snapshot import load_snapshot

        return cls(load_snapshot(path, verify=verify))

    def save_snapshot(self, path: str, *, meta: dict[str, object] | None = None) -> None:
        """Write this matcher's compiled lists as a snapshot file, atomically."""
        from filtercore.snapshot import write_snapshot

        write_snapshot(self.compiled, path, meta=meta)

    # -- public checks ------------------------------------------------------------------

    def check(self, name: str, *, categories: Iterable[str] | None = None) -> Verdict:
        """The verdict for a host name (or an IP literal).

        Raises:
            InvalidNameError: the name cannot be normalised; the message says why.
        """
        if categories is None:
            return self._cache_all.check(name)
        mask = self.compiled.category_mask(categories)
        return self._cache_for(mask).check(name, mask)

    def check_many(
        self, names: Iterable[str], *, categories: Iterable[str] | None = None
    ) -> list[Verdict]:
        """`check` for many names in one call, which amortises the per-call overhead.

        Raises:
            InvalidNameError: for the first name that cannot be normalised.
        """
        if categories is None:
            return self._cache_all.check_many(names)
        mask = self.compiled.category_mask(categories)
        return self._cache_for(mask).check_many(names, mask)

    def check_ip(self, address: str, *, categories: Iterable[str] | None = None) -> Verdict:
        """The verdict for an IPv4/IPv6 address from the lists' IP literal entries.

        Raises:
            InvalidNameError: `address` is not an IP address.
        """
        mask = ALL_CATEGORIES if categories is None else self.compiled.category_mask(categories)
        ip = normalize_ip(address)
        if ip is None:
            from filtercore.errors import InvalidNameError

            raise InvalidNameError(address, "not an IP address")
        code = self._core.exact(ip, mask)
        return NO_MATCH if code < 0 else self._domain_verdict(code, ip, mask, RuleKind.IP)

    def check_url(self, url: str, *, categories: Iterable[str] | None = None) -> Verdict:
        """The verdict for a URL (with or without a scheme).

        Raises:
            InvalidURLError: the URL has no usable host, or its host is not a valid name.
        """
        mask = ALL_CATEGORIES if categories is None else self.compiled.category_mask(categories)
        # Domain lists are looked up with the host as given: `www.example.com` may be
        # listed on its own (hosts files do that), which the squidGuard form strips.
        host, path = split_squidguard_url(url, strip_label=False)
        domain = self._cache_for(mask).check(host, mask) if host else NO_MATCH
        if (
            domain.action is Action.BLOCK
            and domain.kind is not RuleKind.KEYWORD
            and (domain.kind is not RuleKind.EXPRESSION)
        ):
            return domain
        rule = self.compiled.url_rules.match(url)
        if rule is not None:
            verdict = self._text_verdict(
                rule, RuleKind.URL, self.compiled.text_rules[rule].value, mask
            )
            if verdict is not None:
                return verdict
        if len(self.compiled.hashed):
            verdict = self._hashed_url_verdict(url, mask)
            if verdict is not None:
                return verdict
        if domain.action is Action.ALLOW:
            return domain
        if self.compiled.has_text_rules:
            text = f"{host}{path}"
            verdict = self.text_rules_verdict(text, mask)
            if verdict is not None:
                return verdict
        return NO_MATCH

    # -- what was loaded ------------------------------------------------------------------

    @property
    def problems(self) -> list[Problem]:
        """Malformed or unsupported lines met while compiling, with file and line."""
        return self.compiled.problems

    @property
    def categories(self) -> tuple[str, ...]:
        return self.compiled.categories

    def stats(self) -> dict[str, object]:
        """Entries per list and per category, table sizes, and the malformed line count."""
        per_category: dict[str, int] = {}
        lists = []
        seen: set[str] = set()
        for info in self.compiled.lists:
            if info.name in seen:
                continue
            seen.add(info.name)
            count = self.compiled.entry_counts.get(info.name, 0)
            per_category[info.category] = per_category.get(info.category, 0) + count
            lists.append(
                {
                    "list": info.name,
                    "category": info.category,
                    "action": info.action.value,
                    "entries": count,
                    "source": info.source,
                }
            )
        plain = self.compiled.plain
        return {
            "lists": lists,
            "categories": per_category,
            "entries": sum(self.compiled.entry_counts.values()),
            "table_keys": len(plain) + len(self.compiled.hashed),
            "table_bytes": plain.table_bytes() + self.compiled.hashed.table_bytes(),
            "side_bytes": plain.side_bytes() + self.compiled.hashed.side_bytes(),
            "text_rules": len(self.compiled.text_rules),
            "problems": self.compiled.problem_count,
        }

    # -- verdict construction (off the fast path: once per rule and category mask) ---------

    def _cache_for(self, mask: int) -> VerdictCache:
        cache = self._caches.get(mask)
        if cache is None:
            cache = VerdictCache(
                self._core,
                NO_MATCH,
                lambda code, name, m=mask: self._make(code, name, m),
                self.compiled.has_text_rules,
            )
            self._caches[mask] = cache
        return cache

    def _make(self, code: int, name: str, mask: int) -> Verdict:
        """Called by VerdictCache: -2 asks for the IP/slow path, -1 for text rules."""
        if code == -2:
            ip = normalize_ip(name)
            if ip is not None:
                code = self._core.exact(ip, mask)
                return NO_MATCH if code < 0 else self._domain_verdict(code, ip, mask, RuleKind.IP)
            name = _normalize(name)
            code = self._core.walk_normalized(name, mask)
            if code >= 0:
                return self._domain_verdict(code, name, mask, None)
        if code < 0:
            if self.compiled.has_text_rules:
                return self.text_rules_verdict(name, mask) or NO_MATCH
            return NO_MATCH
        return self._domain_verdict(code, name, mask, None)

    def _domain_verdict(self, code: int, name: str, mask: int, kind: RuleKind | None) -> Verdict:
        allow = bool(code & 1)
        hashed = bool(code & 2)
        covers = Scope.SELF if code & 4 else Scope.BELOW
        table = self.compiled.hashed if hashed else self.compiled.plain
        key, gid, line = table.slot_info(code >> 3)
        group = self.compiled.groups[gid]
        # The lists of this key that cover the name this way (and, for blocks, whose
        # category is wanted); the first of them explains the verdict.
        if allow:
            deciding = [i for i, scope in group.allow_lists if scope & covers]
        else:
            deciding = [
                i for i, scope in group.block_lists if scope & covers and self._list_bit(i) & mask
            ]
        lists = self.compiled.lists
        cats = tuple(dict.fromkeys(lists[i].category for i in deciding))
        list_id = deciding[0]
        info = lists[list_id]
        if hashed:
            matched = self._matching_digest(name, key)
            kind = RuleKind.HASHED_DOMAIN
        elif kind is RuleKind.IP:
            matched = name
        else:
            matched = self._matching_suffix(name, key)
            kind = RuleKind.DOMAIN
        if group.line_list != list_id:
            line = self._find_line(list_id, matched)
        return Verdict(
            Action.ALLOW if allow else Action.BLOCK,
            category=info.category,
            categories=cats,
            list=info.name,
            source=info.source,
            line=line,
            matched=matched,
            kind=kind,
            read_rule=lambda: read_line(info.source, line),
        )

    def _list_bit(self, list_id: int) -> int:
        return 1 << self.compiled.categories.index(self.compiled.lists[list_id].category)

    def _matching_suffix(self, name: str, key: int) -> str:
        labels = name.split(".")
        for i in range(len(labels)):
            suffix = ".".join(labels[i:])
            if self.compiled.plain.hash_name(suffix) == key:
                return suffix
        return name

    @staticmethod
    def _matching_digest(name: str, key: int) -> str:
        labels = name.split(".")
        for i in range(len(labels)):
            suffix = ".".join(labels[i:]).encode()
            if sha256_prefix64(suffix) == key:
                return sha256(suffix).hex()
        return f"{key:016x}"

    def _find_line(self, list_id: int, value: str) -> int:
        """The line of `value` in a list whose line the table did not keep (shared keys)."""
        info = self.compiled.lists[list_id]
        for entry in parse_list(info.spec_path, info.spec_format).entries:
            if entry.source == info.source and entry.value == value:
                return entry.line
        return 0

    def _hashed_url_verdict(self, url: str, mask: int) -> Verdict | None:
        try:
            digests = safebrowsing.expression_digests(url)
        except InvalidURLError:
            return None
        best: tuple[int, str] | None = None
        for digest in digests:
            code = self._core.hashed_exact(int.from_bytes(digest[:8], "big"), mask)
            if code >= 0 and (best is None or (code & 1 and not best[0] & 1)):
                best = (code, digest.hex())
        if best is None:
            return None
        verdict = self._domain_verdict(best[0], "", mask, None)
        return Verdict(
            verdict.action,
            category=verdict.category,
            categories=verdict.categories,
            list=verdict.list,
            rule=best[1],
            source=verdict.source,
            line=verdict.line,
            matched=best[1],
            kind=RuleKind.HASHED_URL,
        )

    def text_rules_verdict(self, text: str, mask: int = ALL_CATEGORIES) -> Verdict | None:
        """The verdict of the keywords and expressions alone on `text` (a normalised host
        name, or host and path) under the category `mask`; None when no rule applies.
        `check` falls back to it for a name no domain entry decides, and the DNS fast
        path calls it for the unlisted misses it forwards."""
        hit = self.compiled.keywords.search(text)
        if hit is not None:
            verdict = self._text_verdict(hit[0], RuleKind.KEYWORD, hit[1], mask)
            if verdict is not None:
                return verdict
        hit = self.compiled.expressions.search(text)
        if hit is not None:
            return self._text_verdict(hit[0], RuleKind.EXPRESSION, hit[1], mask)
        return None

    def _text_verdict(self, index: int, kind: RuleKind, matched: str, mask: int) -> Verdict | None:
        rule: TextRule = self.compiled.text_rules[index]
        info = self.compiled.lists[rule.list]
        if rule.action is Action.BLOCK and not self._list_bit(rule.list) & mask:
            return None
        key = (index, mask, matched)
        verdict = self._text_verdicts.get(key)
        if verdict is None:
            verdict = Verdict(
                rule.action,
                category=info.category,
                list=info.name,
                source=info.source,
                line=rule.line,
                matched=matched,
                kind=kind,
                read_rule=lambda: read_line(info.source, rule.line),
            )
            self._text_verdicts[key] = verdict
        return verdict


def parse_target(text: str) -> tuple[str, bool]:
    """Tell a URL from a host name: (text, is_url). A URL has a scheme or a path."""
    if "://" in text:
        return text, True
    if "/" in text.strip().rstrip("/") or "?" in text:
        return text, True
    if text.strip().endswith("/"):
        return text, True
    try:
        urlsplit(text)
    except ValueError as exc:
        raise FilterError(f"cannot read {text!r}: {exc}") from None
    return text, False


__all__ = ["Matcher", "Verdict", "Action", "Kind", "ListSpec", "parse_target"]
