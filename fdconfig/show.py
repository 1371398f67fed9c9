"""The effective configuration as TOML (`filterdns config show`): every key with the value
in force, defaults filled in, so the output loads back to the same `Config`."""

from __future__ import annotations

import ipaddress
from dataclasses import fields
from typing import Any

import msgspec
import tomli_w

from fdconfig.config import Config, ConfigTable
from fdconfig.fields import Address
from fdconfig.lists import FETCH_KEYS, ListConfig
from fdconfig.local import LocalRecord
from fdconfig.policies import DAYS, PolicyConfig
from fdconfig.upstream import DohServer, DotServer


def _value(value: Any) -> Any:
    """A loaded value as TOML writes it: addresses and networks back to their text."""
    if value is None:
        return ""  # a listener that is off
    if isinstance(
        value, Address | DotServer | DohServer | ipaddress.IPv4Network | ipaddress.IPv6Network
    ):
        return str(value)
    if isinstance(value, LocalRecord):
        return value.text()
    if isinstance(value, tuple):
        return [_value(v) for v in value]
    return value


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _list(entry: ListConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"url": entry.url} if entry.url else {"path": entry.path}
    if entry.name is not None:
        out["name"] = entry.name
    out["format"] = entry.format
    if entry.category is not None:
        out["category"] = entry.category
    out["action"] = entry.action
    if entry.url:
        out.update((key, getattr(entry, key)) for key in FETCH_KEYS)
    return out


def _policy(policy: PolicyConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(policy):
        value = getattr(policy, f.name)
        if f.name in ("name", "block_all", "schedule", "allowances", "rewrite") or value is None:
            continue  # the table's name, an implicit policy, or [blocking]'s mode/ttl
        out[f.name] = _value(value)
    out["rewrite"] = dict(policy.rewrite)
    out["schedule"] = [
        {
            "days": [DAYS[d] for d in w.days],
            "start": _clock(w.start),
            "end": _clock(w.end),
            "block": list(w.block),
            "allow": list(w.allow),
            "name": w.name,
        }
        for w in policy.schedule
    ]
    out["allowance"] = [{"category": a.category, "minutes": a.minutes} for a in policy.allowances]
    return out


def effective(config: Config) -> dict[str, Any]:
    """`config` as a TOML document: the keys of each declared table, in declared order."""
    doc: dict[str, Any] = {}
    for f in msgspec.structs.fields(ConfigTable):
        section = getattr(config, f.name, None)
        if f.name == "lists":
            doc["lists"] = [_list(entry) for entry in config.lists]
        elif f.name == "clients":
            doc["clients"] = {"trusted_forwarders": _value(config.policy.trusted_forwarders)}
        elif f.name == "forward":
            doc["forward"] = [
                {
                    "domains": list(rule.domains),
                    "servers": _value(rule.servers),
                    "policies": list(rule.policies),
                }
                for rule in config.forward
            ]
        elif f.name == "local":
            # records_file's records are shown with the others, so the output stands alone.
            doc["local"] = {
                "records": _value(config.local.records),
                "records_file": "",
                "hosts_files": list(config.local.hosts_files),
                "ptr": config.local.ptr,
                "nodefault": list(config.local.nodefault),
                "ttl": config.local.ttl,
            }
        elif f.name == "policies":
            doc["policies"] = {
                p.name: _policy(p) for p in config.policy.policies if not p.block_all
            }
        else:
            keys = [k.name for k in msgspec.structs.fields(f.type)]
            doc[f.name] = {key: _value(getattr(section, key)) for key in keys}
    return doc


def show(config: Config) -> str:
    """The effective configuration as TOML text, headed by where it came from."""
    source = config.source or "the embedded default"
    return (
        f"# The effective configuration of {source} (filterdns config show).\n"
        "# Relative paths (server.data_dir) are relative to that file's folder.\n\n"
        + tomli_w.dumps(effective(config))
    )
