"""The local override list: reviewers' block and allow decisions, above every other list.

The database is the record (`overrides` table); `<data_dir>/overrides.toml` is what the
resolver loads. It is rewritten whole from the table after every change, atomically
(`listsync.fetch.write_atomic`: a temporary file, fsync, rename), so a reader sees the
old list or the new one, never half of one, and an operator can read what is in force
without a database client:

    # filterdns local overrides: written by the admin API, do not edit
    [[override]]
    host = "example.com"
    action = "block"
    category = "adult"
    ...

`OverrideMatcher.check(name)` gives a verdict (list name "overrides") or None; the
resolver asks it before its matcher (`LayeredMatcher`). An override covers the host and
every name below it, like a domain list entry; the most specific override decides.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from filtercore.errors import FilterError, InvalidNameError
from filtercore.normalize import normalize_name
from filtercore.urlrules import split_squidguard_url
from filtercore.verdict import Action, RuleKind, Verdict
from listsync.fetch import write_atomic

LIST_NAME = "overrides"
FILE_NAME = "overrides.toml"
_FIELDS = ("host", "action", "category", "decided_by", "reason", "report_id", "updated_at")
_HEADER = "# filterdns local overrides: written by the admin API, do not edit\n"


def _toml_string(value: str) -> str:
    """A TOML basic string. JSON's escapes are TOML's, except that JSON leaves DEL raw and
    escapes astral characters as surrogate pairs (which TOML forbids), hence the tweaks."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def render_overrides(rows: Iterable[Mapping[str, Any]]) -> str:
    """The text of an overrides file for `rows` (dicts with the keys of `_FIELDS`)."""
    out = [_HEADER]
    for row in rows:
        out.append("\n[[override]]\n")
        for key in _FIELDS:
            value = row.get(key)
            if value is None:
                continue
            text = str(value) if isinstance(value, int) else _toml_string(str(value))
            out.append(f"{key} = {text}\n")
    return "".join(out)


def write_overrides(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Replace the overrides file with `rows`: readers see the old list or the new one."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, render_overrides(rows).encode("utf-8"))


class OverrideMatcher:
    """The override list in memory: host -> verdict.

    Build it with `OverrideMatcher.load(path)` (a missing file is an empty list) or
    `OverrideMatcher(rows)`.
    """

    def __init__(self, rows: Iterable[Mapping[str, Any]] = (), source: str | None = None) -> None:
        self.source = source
        self._verdicts: dict[str, Verdict] = {}
        for line, row in enumerate(rows, 1):
            host = normalize_name(str(row["host"]))
            action = Action.BLOCK if row["action"] == "block" else Action.ALLOW
            category = row.get("category") if action is Action.BLOCK else None
            self._verdicts[host] = Verdict(
                action,
                category=category,
                list=LIST_NAME,
                rule=host,
                source=source,
                line=line,
                matched=host,
                kind=RuleKind.DOMAIN,
            )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> OverrideMatcher:
        """Read an overrides file written by `write_overrides`.

        Raises:
            FilterError: the file is not valid TOML or an entry is malformed.
        """
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls((), source=str(p))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise FilterError(f"{p}: cannot read the overrides: {exc}") from None
        rows = data.get("override", [])
        for number, row in enumerate(rows, 1):
            if not isinstance(row, dict) or row.get("action") not in ("block", "allow"):
                raise FilterError(f"{p}: override #{number}: needs host and action block|allow")
            if not isinstance(row.get("host"), str):
                raise FilterError(f"{p}: override #{number}: host must be a string")
        try:
            return cls(rows, source=str(p))
        except FilterError as exc:
            raise FilterError(f"{p}: {exc}") from None

    def __len__(self) -> int:
        return len(self._verdicts)

    def hosts(self) -> dict[str, str]:
        """host -> action, for display."""
        return {host: v.action.value for host, v in self._verdicts.items()}

    def check(self, name: str) -> Verdict | None:
        """The override deciding `name` (the most specific covering it), or None.

        Raises:
            InvalidNameError: `name` is not a host name (as `Matcher.check`).
        """
        host = normalize_name(name)
        while True:
            verdict = self._verdicts.get(host)
            if verdict is not None:
                return verdict
            dot = host.find(".")
            if dot < 0:
                return None
            host = host[dot + 1 :]


class LayeredMatcher:
    """A matcher with the overrides on top: what the resolver and the API ask.

    `check` asks the overrides first, then `base`; `check_url` does the same with the
    URL's host; everything else (`check_ip`, `stats`, `compiled`, ...) is `base`'s.

    With `categories=` (a policy's choice, see dns_resolver.steps.policy) a block override of a
    category outside them is passed over, as the matcher passes over such list entries;
    an allow override always applies.

    The Cython fast path walks `base`'s table itself and hands every query at or below an
    override's host, and every upstream answer naming one, to Python
    (`dns_resolver.fast.fastpath`), so `_core` is deliberately not passed through.
    """

    def __init__(self, overrides: OverrideMatcher, base: Any) -> None:
        self.overrides = overrides
        self.base = base

    def _override(self, name: str, categories: Any) -> Verdict | None:
        found = self.overrides.check(name)
        if (
            found is not None
            and categories is not None
            and found.action is Action.BLOCK
            and found.category not in categories
        ):
            return None
        return found

    def check(self, name: str, *args: Any, **kwargs: Any) -> Verdict:
        found = self._override(name, kwargs.get("categories"))
        return found if found is not None else self.base.check(name, *args, **kwargs)

    def check_url(self, url: str, *args: Any, **kwargs: Any) -> Verdict:
        host, _ = split_squidguard_url(url, strip_label=False)
        try:
            found = self._override(host, kwargs.get("categories"))
        except InvalidNameError:  # an IPv6 literal host: no override can name it
            found = None
        return found if found is not None else self.base.check_url(url, *args, **kwargs)

    def check_many(self, names: Iterable[str]) -> list[Verdict]:
        return [self.check(name) for name in names]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.base, name)
