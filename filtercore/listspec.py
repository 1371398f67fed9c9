"""How a caller names a list to load: a path, its format, category and action."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from filtercore.errors import FilterError
from filtercore.verdict import Action


@dataclass(frozen=True)
class ListSpec:
    """One list to compile into a matcher.

    Attributes:
        path: a list file, a UT1-style category tree (folder), or a `.tar.gz`/`.gz` archive.
        name: the list's name in verdicts; defaults to the file or folder name.
        format: a format name from `filtercore.formats.FORMATS`, or "auto" to sniff.
        category: the canonical category of every entry; `None` for category trees, whose
            folder names are mapped through the category map.
        action: what the list's entries do (an `@@` rule or RPZ passthru overrides it).
    """

    path: str
    name: str | None = None
    format: str = "auto"
    category: str | None = None
    action: Action = Action.BLOCK

    @property
    def display_name(self) -> str:
        if self.name:
            return self.name
        p = Path(self.path)
        base = p.name
        for suffix in (".tar.gz", ".tgz", ".gz"):
            if base.endswith(suffix):
                return base[: -len(suffix)]
        # UT1 files are all called `domains`/`urls`: name them after their folder.
        if p.parent.name and base in {"domains", "urls", "expressions", "keywords"}:
            return p.parent.name
        return p.stem or base

    @classmethod
    def parse(cls, text: str) -> ListSpec:
        """Parse the command-line form `PATH[:CATEGORY[:FORMAT]]`.

        An empty CATEGORY (`PATH::FORMAT`) leaves the category to the category map.
        """
        path, _, rest = text.partition(":")
        category, _, fmt = rest.partition(":")
        if not path:
            raise FilterError(
                f"--list {text!r}: the path is empty (expected PATH[:CATEGORY[:FORMAT]])"
            )
        return cls(path=path, category=category or None, format=fmt or "auto")
