"""A subscriber as the API, the CLI's import and RADIUS give it, checked."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from filtercore.errors import FilterError
from filtercore.normalize import normalize_name
from reports.submission import ValidationError
from subscribers.addresses import canonical
from subscribers.models import ID_LEN, MAX_OWN_NAMES

MAX_ADDRESSES = 64
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]*$")
FIELDS = ("policy", "addresses", "allow_domains", "block_domains")


@dataclass(frozen=True)
class SubscriberInput:
    """A valid subscriber: addresses canonical (subscribers.addresses), names normalised."""

    id: str
    policy: str
    addresses: tuple[str, ...] = ()
    allow_domains: tuple[str, ...] = ()
    block_domains: tuple[str, ...] = ()


def check_id(value: object) -> str:
    """A subscriber id: 1-100 characters of letters, digits and `._:@+-`."""
    if not isinstance(value, str) or not 0 < len(value) <= ID_LEN or not _ID.match(value):
        raise ValidationError(
            "id", f"a subscriber id is 1 to {ID_LEN} letters, digits or ._:@+- characters"
        )
    return value


def _strings(data: Mapping[str, Any], field: str, limit: int) -> list[str]:
    value = data.get(field, [])
    if isinstance(value, str):  # CSV cells: space- or semicolon-separated
        value = [v for v in re.split(r"[\s;]+", value) if v]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError(field, "must be an array of strings")
    if len(value) > limit:
        raise ValidationError(field, f"at most {limit} entries")
    return value


def _names(data: Mapping[str, Any], field: str) -> tuple[str, ...]:
    out = []
    for name in _strings(data, field, MAX_OWN_NAMES):
        try:
            out.append(normalize_name(name))
        except FilterError as exc:
            raise ValidationError(field, str(exc)) from None
    return tuple(sorted(set(out)))


def parse_subscriber(
    subscriber_id: object, data: object, policies: Collection[str]
) -> SubscriberInput:
    """Check a subscriber's JSON object (`policy`, `addresses`, `allow_domains`,
    `block_domains`); `policies` are the configured policy names."""
    sid = check_id(subscriber_id)
    if not isinstance(data, Mapping):
        raise ValidationError("", "the body must be a JSON object")
    unknown = sorted(set(data) - set(FIELDS) - {"id"})
    if unknown:
        raise ValidationError(unknown[0], f"unknown field; the fields are {', '.join(FIELDS)}")
    policy = data.get("policy")
    if not isinstance(policy, str) or policy not in policies:
        raise ValidationError(
            "policy", f"{policy!r} is not a configured policy ({', '.join(sorted(policies))})"
        )
    addresses = []
    for text in _strings(data, "addresses", MAX_ADDRESSES):
        try:
            addresses.append(canonical(text))
        except ValueError as exc:
            raise ValidationError("addresses", str(exc)) from None
    return SubscriberInput(
        id=sid,
        policy=policy,
        addresses=tuple(dict.fromkeys(addresses)),
        allow_domains=_names(data, "allow_domains"),
        block_domains=_names(data, "block_domains"),
    )
