"""filtercore: normalise names and URLs, match them against lists, explain the verdict.

>>> from filtercore import Matcher, ListSpec
>>> m = Matcher.from_lists([ListSpec("blocklist.txt", category="gambling")])  # doctest: +SKIP
>>> m.check("www.casino.example").action  # doctest: +SKIP
<Action.BLOCK: 'block'>
"""

from typing import TYPE_CHECKING

from filtercore.errors import (
    FilterError,
    InvalidNameError,
    InvalidURLError,
    ListFormatError,
)
from filtercore.listspec import ListSpec
from filtercore.verdict import NO_MATCH, Action, RuleKind, Verdict

if TYPE_CHECKING:
    # For type checkers `Matcher` is a plain import, so `m: Matcher` works in user code;
    # at run time it is imported lazily by `__getattr__` below.
    from filtercore.matcher import Matcher

__all__ = [
    "Action",
    "FilterError",
    "InvalidNameError",
    "InvalidURLError",
    "ListFormatError",
    "ListSpec",
    "Matcher",
    "NO_MATCH",
    "RuleKind",
    "Verdict",
]


def __getattr__(name: str) -> object:
    # The matcher needs the compiled extension; import it on first use so that the
    # pure-Python parts (formats, normalisation) stay importable without a build.
    if name == "Matcher":
        from filtercore.matcher import Matcher

        return Matcher
    raise AttributeError(f"module 'filtercore' has no attribute {name!r}")
