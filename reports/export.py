"""Audit trail export for a regulator or a hotline: JSON (the records as written) or CSV.

The CSV has fixed columns, so a spreadsheet can sort and filter it whatever the record
kinds: `time, kind, who, action, subject, category, reason, details`, where `details` is
the rest of the record as JSON (nothing is dropped).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from typing import Any

FORMATS = ("json", "csv")
CSV_COLUMNS = ("time", "kind", "who", "action", "subject", "category", "reason", "details")

# Where each column comes from, per record kind: the first key present wins.
_WHO = ("reviewer", "source")
_ACTION = ("action", "result")
_SUBJECT = ("host", "target", "url")


def _first(record: Mapping[str, Any], keys: Iterable[str]) -> tuple[str | None, Any]:
    for key in keys:
        if record.get(key) not in (None, ""):
            return key, record[key]
    return None, None


def csv_row(record: Mapping[str, Any]) -> dict[str, str]:
    """One audit record as a CSV row of `CSV_COLUMNS`."""
    used = {"time", "kind", "category", "reason"}
    row: dict[str, Any] = {
        "time": record.get("time", ""),
        "kind": record.get("kind", ""),
        "category": record.get("category") or "",
        "reason": record.get("reason") or "",
    }
    for column, keys in (("who", _WHO), ("action", _ACTION), ("subject", _SUBJECT)):
        key, value = _first(record, keys)
        row[column] = "" if value is None else value
        if key is not None:
            used.add(key)
    rest = {k: v for k, v in record.items() if k not in used}
    row["details"] = json.dumps(rest, sort_keys=True, ensure_ascii=False) if rest else ""
    return {k: _cell(v) for k, v in row.items()}


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    # A cell starting with = + - @ is a formula to a spreadsheet: a reporter's comment
    # must not become one (CSV injection), so such cells get a leading apostrophe.
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


def export_audit(records: Iterable[Mapping[str, Any]], fmt: str) -> str:
    """The records as a JSON array (one record a line) or as CSV with a header."""
    if fmt == "json":
        return "[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n]\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\r\n")
        writer.writeheader()
        for record in records:
            writer.writerow(csv_row(record))
        return out.getvalue()
    raise ValueError(f"unknown export format {fmt!r}; one of {', '.join(FORMATS)}")
