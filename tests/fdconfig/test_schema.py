"""The JSON Schema: shipped copy, editors' view of the example files, and the generated
key tables of docs/configuration.md."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import fdconfig
from fdconfig.schema import documented_keys, json_schema, render_docs, schema_keys, schema_text
from fdconfig.subscribers import RadiusConfig, SubscribersConfig

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "docs" / "filterdns.schema.json"
REFERENCE = REPO / "docs" / "configuration.md"
EXAMPLES = sorted(REPO.glob("examples/*.toml")) + [REPO / "deploy" / "filterdns.toml"]


def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SHIPPED.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_the_shipped_schema_is_the_generated_one() -> None:
    assert SHIPPED.read_text() == schema_text()


def test_config_schema_prints_it() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "filterdns", "config", "schema"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=REPO,
    )
    assert out.stdout == SHIPPED.read_text()


def _properties(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any], bool]]:
    out = []
    for name, table in schema["$defs"].items():
        required = set(table.get("required", ()))
        out += [
            (f"{name}.{key}", prop, key in required) for key, prop in table["properties"].items()
        ]
    return out


def test_every_key_has_a_description_and_a_default() -> None:
    for key, prop, required in _properties(json_schema()):
        nested = (
            "$ref" in prop
            or "$ref" in prop.get("items", {})
            or (isinstance(prop.get("additionalProperties"), dict))
        )
        if nested:
            continue  # a table: its own keys carry the defaults
        assert prop.get("description"), key
        assert required or "default" in prop or "x-default" in prop, key


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_the_schema_accepts_the_shipped_configs(path: Path) -> None:
    validator().validate(tomllib.loads(path.read_text()))


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[servr]\nlisten = []\n", "servr"),
        ("[server]\nlisen = []\n", "lisen"),
        ('[[lists]]\npath = "x"\ncatgory = "adult"\n', "catgory"),
        ('[policies.kids]\nblok = ["adult"]\n', "blok"),
        ('[[policies.kids.schedule]]\nstart = "08:00"\nend = "09:00"\nday = ["mon"]\n', "day"),
    ],
)
def test_the_schema_rejects_a_misspelt_key(text: str, where: str) -> None:
    errors = list(validator().iter_errors(tomllib.loads(text)))
    assert errors and any(where in e.message for e in errors), [e.message for e in errors]


@pytest.mark.parametrize(
    "text",
    [
        '[upstream]\nstrategy = "fast"\n',
        "[server]\nudp_payload_size = 100\n",
        '[cache]\nenabled = "yes"\n',
        '[server]\nworkers = "many"\n',
    ],
)
def test_the_schema_rejects_wrong_values(text: str) -> None:
    assert list(validator().iter_errors(tomllib.loads(text)))


def test_the_reference_tables_are_generated_from_the_schema() -> None:
    text = REFERENCE.read_text()
    assert render_docs(text) == text, "run: filterdns config docs docs/configuration.md"
    assert documented_keys(text) == schema_keys()


def test_the_schema_names_every_key_the_loader_reads() -> None:
    """Each field of the loaded sections is a documented key (or derived, not a key)."""
    derived = {"upstream.from_resolv_conf", "upstream.resolv_conf"}
    keys = schema_keys()
    sections = {
        "server": fdconfig.ServerConfig,
        "upstream": fdconfig.UpstreamConfig,
        "cache": fdconfig.CacheConfig,
        "blocking": fdconfig.BlockingConfig,
        "access": fdconfig.AccessConfig,
        "metrics": fdconfig.MetricsConfig,
        "querylog": fdconfig.QueryLogConfig,
        "logging": fdconfig.LoggingConfig,
        "admin": fdconfig.AdminConfig,
        "reports": fdconfig.ReportsConfig,
        "lists": fdconfig.ListConfig,
        "blockpage": fdconfig.BlockPageConfig,
        "console": fdconfig.ConsoleConfig,
        "subscribers": SubscribersConfig,
        "radius": RadiusConfig,
    }
    for name, cls in sections.items():
        fields = {f"{name}.{f.name}" for f in dataclasses.fields(cls)} - derived
        assert fields == {k for k in keys if k.startswith(name + ".")}, name


def test_declared_defaults_are_the_dataclass_defaults(tmp_path: Path) -> None:
    """An empty file loads to each section's dataclass default (one default, two places)."""
    path = tmp_path / "empty.toml"
    path.write_text("")
    config = fdconfig.load_config(path, resolv_conf=str(tmp_path / "none"))
    default = fdconfig.Config()
    for name in ("server", "cache", "blocking", "access", "metrics", "logging", "admin"):
        assert getattr(config, name) == getattr(default, name), name
    assert config.blockpage == default.blockpage
    assert dataclasses.replace(config.upstream, resolv_conf="") == dataclasses.replace(
        default.upstream, from_resolv_conf=True, resolv_conf=""
    )
    assert dataclasses.replace(config.querylog, path="query.log") == default.querylog
    assert dataclasses.replace(config.reports, form_url="", page_url="") == default.reports
