"""Import files: JSON lines (`{"id": ..., "policy": ..., "addresses": [...], ...}`) or CSV
with a header row naming `id`, `policy` and optionally `addresses`, `allow_domains`,
`block_domains` (lists in a cell separated by spaces or `;`)."""

from __future__ import annotations

import csv
import json
from collections.abc import Collection
from typing import Any

from reports.submission import ValidationError
from subscribers.input import FIELDS, SubscriberInput, parse_subscriber


class ImportError_(ValueError):  # noqa: N801 (ImportError is a builtin)
    """A line of an import that is not a valid subscriber: names the line and field."""

    def __init__(self, line: int, message: str, field: str | None = None) -> None:
        super().__init__(f"line {line}: {field + ': ' if field else ''}{message}")
        self.field = field


class LineParser:
    """Feed lines one by one; `feed` returns the subscriber of a line, or None (blank,
    header)."""

    def __init__(self, kind: str, policies: Collection[str]) -> None:
        self.kind = kind
        self.policies = policies
        self.line = 0
        self.header: list[str] | None = None

    def feed(self, text: str) -> SubscriberInput | None:
        self.line += 1
        text = text.strip().lstrip("\ufeff") if self.line == 1 else text.strip()
        if not text:
            return None
        data: Any
        if self.kind == "jsonl":
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise ImportError_(self.line, f"not JSON: {exc}") from None
        else:
            cells = next(csv.reader([text]))
            if self.header is None:
                self.header = [c.strip() for c in cells]
                unknown = sorted(set(self.header) - {"id", *FIELDS})
                if "id" not in self.header or "policy" not in self.header or unknown:
                    raise ImportError_(
                        self.line,
                        "the header names id, policy and optionally "
                        "addresses, allow_domains, block_domains",
                    )
                return None
            data = dict(zip(self.header, cells, strict=False))
        if not isinstance(data, dict):
            raise ImportError_(self.line, "a line is one JSON object")
        try:
            return parse_subscriber(data.get("id"), data, self.policies)
        except ValidationError as exc:
            raise ImportError_(self.line, exc.message, exc.field or None) from None


def parse_lines(kind: str, policies: Collection[str]) -> LineParser:
    """A parser of `kind` ("jsonl" or "csv")."""
    return LineParser(kind, policies)


def kind_of(path: str) -> str:
    """ "csv" for a .csv file, else "jsonl"."""
    return "csv" if path.lower().endswith(".csv") else "jsonl"
