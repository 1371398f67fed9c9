"""A plain-Python model of the verdict rules (DESIGN.md), written for clarity, not speed.

The property tests check the Cython matcher against it: every rule of the contract is one
readable line here.
"""

from __future__ import annotations

from dataclasses import dataclass

from filtercore.entries import Scope
from filtercore.normalize import normalize_name


@dataclass(frozen=True)
class ModelEntry:
    name: str  # normalised
    allow: bool
    scope: Scope
    category: str


def model_check(
    entries: list[ModelEntry], query: str, categories: set[str] | None = None
) -> tuple[str, str | None]:
    """(action, matched name) for `query`: "allow", "block" or "none"."""
    name = normalize_name(query)
    labels = name.split(".")
    # Shallowest first, so a later (deeper) decision replaces an earlier one.
    decision: tuple[str, str | None] = ("none", None)
    for depth in range(len(labels) - 1, -1, -1):
        suffix = ".".join(labels[depth:])
        covers = Scope.SELF if suffix == name else Scope.BELOW
        here = [e for e in entries if e.name == suffix and e.scope & covers]
        if any(e.allow for e in here):
            decision = ("allow", suffix)
        elif any(not e.allow and (categories is None or e.category in categories) for e in here):
            decision = ("block", suffix)
    return decision
