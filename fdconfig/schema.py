"""The JSON Schema of the configuration file, and docs/configuration.md's key tables made
from it, so the reference cannot drift from the code.

Editors that read a `#:schema PATH-OR-URL` comment at the top of a TOML file (Taplo, Even
Better TOML) complete and check keys with it; `docs/filterdns.schema.json` is the shipped
copy (`filterdns config schema` prints the same document).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import msgspec

from fdconfig.config import ConfigTable

SCHEMA_ID = "https://filterdns.example/filterdns.schema.json"
MARKER = re.compile(r"^<!-- keys: ([\w ]+) -->$")


def json_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of a `filterdns serve` TOML file."""
    schema = msgspec.json.schema(ConfigTable)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "filterdns configuration",
        **schema,
    }


def schema_text() -> str:
    """`json_schema()` as the shipped file holds it."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    return schema["$defs"][ref.rsplit("/", 1)[-1]] if ref else node


def _nested(schema: dict[str, Any], prop: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The table a key holds, with how its keys are spelt: `x.` (a table), `x[].` (an array
    of tables) or `x.NAME.` (a table of tables); None for a plain value."""
    if "$ref" in prop:
        return ".", _resolve(schema, prop)
    items = prop.get("items", {})
    if prop.get("type") == "array" and "$ref" in items:
        return "[].", _resolve(schema, items)
    values = prop.get("additionalProperties")
    if prop.get("type") == "object" and isinstance(values, dict) and "$ref" in values:
        return ".NAME.", _resolve(schema, values)
    return None


def _rows(
    schema: dict[str, Any], table: dict[str, Any], prefix: str
) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """(key, its schema, required) for every plain key under `table`, depth first."""
    required = set(table.get("required", ()))
    for name, prop in table["properties"].items():
        nested = _nested(schema, prop)
        if nested is None:
            yield prefix + name, prop, name in required
        else:
            yield from _rows(schema, nested[1], prefix + name + nested[0])


def _default(prop: dict[str, Any], required: bool) -> str:
    if "x-default" in prop:
        return str(prop["x-default"])
    if "default" in prop:
        return f"`{json.dumps(prop['default'], ensure_ascii=False)}`"
    return "required" if required else "none"


def key_table(sections: list[str]) -> list[str]:
    """The Markdown table of the keys of `sections` (top-level keys of the file).

    One section: its keys as they are written inside it (`listen`); several: full dotted
    keys (`policies.NAME.block`, `policies.NAME.schedule[].start`).
    """
    schema = json_schema()
    top = _resolve(schema, schema)
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for section in sections:
        prop = top["properties"][section]
        nested = _nested(schema, prop)
        assert nested is not None, section
        prefix = "" if len(sections) == 1 else section + nested[0]
        for key, field, required in _rows(schema, nested[1], prefix):
            meaning = field.get("description", "").replace("|", "\\|")
            lines.append(f"| `{key}` | {_default(field, required)} | {meaning} |")
    return lines


def render_docs(text: str) -> str:
    """`text` (docs/configuration.md) with the table after each `<!-- keys: ... -->` marker
    regenerated from the schema; the prose around the tables is kept as written."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        if m := MARKER.match(line):
            while i < len(lines) and lines[i].startswith("|"):
                i += 1  # the previous table, replaced
            out.extend(key_table(m.group(1).split()))
    return "\n".join(out) + "\n"


def documented_keys(text: str) -> set[str]:
    """Every key a generated table of `text` names, dotted from the top of the file."""
    keys = set()
    section: list[str] = []
    for line in text.splitlines():
        if m := MARKER.match(line):
            section = m.group(1).split()
        elif section and (row := re.match(r"^\| `([^`]+)` \|", line)):
            keys.add(row.group(1) if len(section) > 1 else f"{section[0]}.{row.group(1)}")
        elif not line.startswith("|"):
            section = []
    return keys


def schema_keys() -> set[str]:
    """Every key of the file, dotted as `documented_keys` spells them."""
    schema = json_schema()
    top = _resolve(schema, schema)
    keys: set[str] = set()
    for section, prop in top["properties"].items():
        nested = _nested(schema, prop)
        assert nested is not None, section
        sep = "." if nested[0] == "[]." else nested[0]
        keys.update(key for key, _f, _r in _rows(schema, nested[1], section + sep))
    return keys
