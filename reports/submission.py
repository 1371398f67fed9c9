"""Validation of what the public and reviewers send: reports, appeals and decisions.

Everything that reaches the database passes through here first, so the store can trust
its input: strings are bounded, free of NUL and unpaired surrogates (PostgreSQL rejects
both, which would otherwise surface as a 500), hosts are normalised the way the matcher
normalises them, and categories come from the category map.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from filtercore.categories import CategoryMap
from filtercore.errors import FilterError
from filtercore.matcher import parse_target
from filtercore.normalize import normalize_ip, normalize_name
from filtercore.urlrules import split_squidguard_url
from reports.vocabulary import (
    ACTIONS,
    COMMENT_LEN,
    NAME_LEN,
    PUBLIC_KINDS,
    REASON_LEN,
    TARGET_LEN,
)


class ValidationError(ValueError):
    """Input the API refuses: `field` names the culprit, `status` is the HTTP status."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Submission:
    """A valid report or appeal. `target` is the normalised host, or host + path for a URL;
    `host` is what a decision overrides (DNS sees host names only)."""

    target: str
    host: str
    kind: str
    category: str | None
    list_name: str | None
    policy: str | None
    comment: str | None


@dataclass(frozen=True)
class DecisionInput:
    """A valid decision: block needs a category; every decision needs a reason."""

    action: str
    category: str | None
    reason: str


def text_field(
    data: Mapping[str, Any], field: str, limit: int, *, required: bool = False
) -> str | None:
    """A bounded, storable string field; "" and missing are None unless required."""
    value = data.get(field)
    if value is None:
        if required:
            raise ValidationError(field, "is required")
        return None
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, got {type(value).__name__}")
    value = value.strip()
    if len(value) > limit:
        raise ValidationError(field, f"must be at most {limit} characters, got {len(value)}")
    if "\x00" in value:
        raise ValidationError(field, "must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(field, "is not valid Unicode text") from None
    if not value:
        if required:
            raise ValidationError(field, "must not be empty")
        return None
    return value


def parse_report_target(text: str) -> tuple[str, str]:
    """`(target, host)` of a host name or http(s) URL, normalised as the matcher does.

    Raises:
        ValidationError: not a URL or a host name with at least two labels.
    """
    try:
        _, is_url = parse_target(text)
        if is_url:
            scheme = text.split("://", 1)[0].lower() if "://" in text else "http"
            if scheme not in ("http", "https"):
                raise ValidationError("target", f"only http and https URLs, got {scheme}://")
            host, path = split_squidguard_url(text, strip_label=False)
        else:
            host, path = normalize_name(text), ""
    except FilterError as exc:
        raise ValidationError("target", f"not a host name or URL: {exc}") from None
    if normalize_ip(host) is not None:
        raise ValidationError("target", "an IP address cannot be reviewed; give the host name")
    if "." not in host:
        raise ValidationError("target", f"{host!r} is not a public host name (one label)")
    if path in ("/", ""):
        path = ""
    return host + path, host


def _category(data: Mapping[str, Any], categories: CategoryMap, *, required: bool) -> str | None:
    name = text_field(data, "category", NAME_LEN, required=required)
    if name is None:
        return None
    canonical = categories.canonical(name)
    if canonical is None:
        raise ValidationError(
            "category", f"unknown category {name!r}; one of {', '.join(categories.names)}"
        )
    return canonical


def parse_submission(data: Any, categories: CategoryMap) -> Submission:
    """Validate a report or appeal from JSON or a form.

    Unknown fields are ignored, so a block page may send more than this needs.

    Raises:
        ValidationError: with the field and the reason.
    """
    if not isinstance(data, Mapping):
        raise ValidationError("", "the body must be a JSON object")
    raw_target = text_field(data, "target", TARGET_LEN, required=True)
    assert raw_target is not None
    target, host = parse_report_target(raw_target)
    kind = text_field(data, "kind", 16) or "report"
    if kind not in PUBLIC_KINDS:
        raise ValidationError("kind", f'must be "report" or "appeal", got {kind!r}')
    return Submission(
        target=target,
        host=host,
        kind=kind,
        category=_category(data, categories, required=False),
        list_name=text_field(data, "list", NAME_LEN),
        policy=text_field(data, "policy", NAME_LEN),
        comment=text_field(data, "comment", COMMENT_LEN),
    )


def parse_decision(data: Any, categories: CategoryMap) -> DecisionInput:
    """Validate a reviewer's decision.

    Raises:
        ValidationError: with the field and the reason.
    """
    if not isinstance(data, Mapping):
        raise ValidationError("", "the body must be a JSON object")
    action = text_field(data, "action", 16, required=True)
    if action not in ACTIONS:
        raise ValidationError("action", f'must be "block", "allow" or "reject", got {action!r}')
    category = _category(data, categories, required=action == "block")
    reason = text_field(data, "reason", REASON_LEN, required=True)
    assert reason is not None
    return DecisionInput(action=action, category=category, reason=reason)
