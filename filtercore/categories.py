"""The canonical categories and the map from source category names to them.

A list says what its entries are in its own words (UT1 folder `drogue`, Shallalist
`gamble`, a Hagezi `nsfw` list); verdicts and policies speak of canonical categories
(`drugs`, `gambling`, `adult`). The map lives in `lists/categories.toml` (installed as the
resource `filterdns.lists/categories.toml`); see that file for its keys.

>>> cmap = CategoryMap.load()
>>> cmap.canonical("drogue"), cmap.canonical("Sexual Education"), cmap.canonical("sect")
('drugs', 'education', None)
>>> cmap.is_white("education"), cmap.bit("adult")
(True, 0)
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from filtercore.errors import FilterError

CATEGORY_FILE = "categories.toml"
_TOP_KEYS = frozenset({"category", "unmapped"})
_CATEGORY_KEYS = frozenset({"name", "description", "white", "sources"})
_UNMAPPED_KEYS = frozenset({"names"})


def source_key(name: str) -> str:
    """The form source names are compared in: lower case, `-`, `_` and spaces alike."""
    return "_".join(name.strip().lower().replace("-", " ").replace("_", " ").split())


@dataclass(frozen=True)
class Category:
    """One canonical category."""

    name: str
    description: str
    white: bool


class CategoryMap:
    """Canonical categories, in bit order, and the source names that map to them."""

    def __init__(
        self,
        categories: list[Category],
        aliases: dict[str, str],
        unmapped: frozenset[str] = frozenset(),
    ) -> None:
        """Build a map; `aliases` maps `source_key` forms to canonical names."""
        self._categories = {category.name: category for category in categories}
        self._aliases = dict(aliases)
        for category in categories:
            self._aliases.setdefault(source_key(category.name), category.name)
        self._bits = {category.name: bit for bit, category in enumerate(categories)}
        self.unmapped = unmapped
        self.names: tuple[str, ...] = tuple(category.name for category in categories)

    @classmethod
    def load(cls, path: str | Path | None = None) -> CategoryMap:
        """Load a category map, by default the one bundled with filterdns.

        The bundled file is the resource `filterdns.lists/categories.toml`; when running
        from a source tree where that package is not installed, `lists/categories.toml`
        next to the `filtercore` folder.

        Raises:
            FilterError: the file is missing or not valid TOML, has an unknown key (named
                with the file), a category without a name, or a source name mapped to two
                categories.
        """
        if path is None:
            text, where = _bundled_text()
        else:
            where = str(path)
            try:
                text = Path(path).read_text(encoding="utf-8")
            except OSError as exc:
                raise FilterError(f"{where}: cannot read category map: {exc.strerror}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise FilterError(f"{where}: invalid TOML: {exc}") from None
        return cls._from_dict(data, where)

    @classmethod
    def _from_dict(cls, data: dict[str, object], where: str) -> CategoryMap:
        _check_keys(data, _TOP_KEYS, where, "the top level")
        raw_categories = data.get("category", [])
        if not isinstance(raw_categories, list) or not raw_categories:
            raise FilterError(f"{where}: expected at least one [[category]] table")
        categories: list[Category] = []
        aliases: dict[str, str] = {}
        for number, raw in enumerate(raw_categories, 1):
            if not isinstance(raw, dict):
                raise FilterError(f"{where}: [[category]] #{number} is not a table")
            _check_keys(raw, _CATEGORY_KEYS, where, f"[[category]] #{number}")
            name = raw.get("name")
            if not isinstance(name, str) or not name:
                raise FilterError(f"{where}: [[category]] #{number} has no name")
            if any(existing.name == name for existing in categories):
                raise FilterError(f"{where}: category {name!r} defined twice")
            white = raw.get("white", False)
            if not isinstance(white, bool):
                raise FilterError(f"{where}: category {name!r}: white must be true or false")
            categories.append(Category(name, str(raw.get("description", "")), white))
            sources = raw.get("sources", [])
            if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
                raise FilterError(f"{where}: category {name!r}: sources must be a list of strings")
            for source in [name, *sources]:
                key = source_key(source)
                other = aliases.get(key)
                if other is not None and other != name:
                    raise FilterError(
                        f"{where}: source {source!r} mapped to both {other!r} and {name!r}"
                    )
                aliases[key] = name
        unmapped_table = data.get("unmapped", {})
        if not isinstance(unmapped_table, dict):
            raise FilterError(f"{where}: [unmapped] must be a table")
        _check_keys(unmapped_table, _UNMAPPED_KEYS, where, "[unmapped]")
        unmapped = frozenset(source_key(name) for name in unmapped_table.get("names", []))
        clash = sorted(unmapped & aliases.keys())
        if clash:
            raise FilterError(f"{where}: {clash[0]!r} is both mapped and in [unmapped]")
        return cls(categories, aliases, unmapped)

    def canonical(self, name: str) -> str | None:
        """The canonical category a source category name means, or None if unmapped."""
        return self._aliases.get(source_key(name))

    def is_white(self, canonical: str) -> bool:
        """True if `canonical` is a white (allow) category; False for others and unknowns."""
        category = self._categories.get(canonical)
        return category is not None and category.white

    def bit(self, name: str) -> int:
        """The bit position of a canonical category (its index in `names`).

        Raises:
            KeyError: `name` is not a canonical category.
        """
        try:
            return self._bits[name]
        except KeyError:
            raise KeyError(f"not a canonical category: {name!r}") from None

    def describe(self, name: str) -> str:
        """The one-line description of a canonical category ("" when unknown)."""
        category = self._categories.get(name)
        return category.description if category else ""

    def __contains__(self, name: object) -> bool:
        return name in self._categories

    def __repr__(self) -> str:
        return f"CategoryMap({', '.join(self.names)})"


def _check_keys(table: dict[str, object], allowed: frozenset[str], where: str, what: str) -> None:
    """Refuse keys a table may not have, naming the first and the file."""
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise FilterError(
            f"{where}: unknown key {unknown[0]!r} in {what} "
            f"(expected one of {', '.join(sorted(allowed))})"
        )


def _bundled_text() -> tuple[str, str]:
    """The text of the bundled category map and where it came from."""
    try:
        resource = resources.files("filterdns.lists").joinpath(CATEGORY_FILE)
        return resource.read_text(encoding="utf-8"), str(resource)
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        pass  # not installed: running from the source tree
    path = Path(__file__).resolve().parents[1] / "lists" / CATEGORY_FILE
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except OSError as exc:
        raise FilterError(f"{path}: cannot read the bundled category map: {exc}") from None
