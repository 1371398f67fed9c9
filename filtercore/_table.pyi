"""Type stub for the Cython extension `filtercore._table` (see `_table.pyx`, `_table.pxd`)."""

from collections.abc import Callable, Iterable
from typing import final

from _typeshed import ReadableBuffer

from filtercore.entries import Entry
from filtercore.verdict import Verdict

# What a table keeps: the builder's bytearrays, or slices of a snapshot's mapping.
_Buffer = bytes | bytearray | memoryview

def normalize(name: str) -> str:
    """Normalise a host name (C fast path for ASCII, `normalize_name` otherwise)."""

def run_end(entries: list[Entry], start: int) -> int:
    """The end of the run of entries that differ from entries[start] only in value and line."""

@final
class DomainTable:
    """A read-only table of 64-bit keys with a group id and a source line per key."""

    @property
    def k0(self) -> int: ...
    @property
    def k1(self) -> int: ...
    @property
    def shift(self) -> int: ...
    @staticmethod
    def from_arrays(
        k0: int,
        k1: int,
        keys: ReadableBuffer,
        groups: ReadableBuffer,
        lines: ReadableBuffer,
        dir_: ReadableBuffer,
        shift: int,
    ) -> DomainTable:
        """Wrap existing buffers (bytes, bytearray, mmap slices): nothing is copied."""
    def __len__(self) -> int: ...
    def hash_name(self, name: str) -> int:
        """The key of a normalised name under this table's secret."""
    def lookup_key(self, key: int) -> tuple[int, int, bool, int] | None:
        """(slot, group id, has children, line) of a key, or None."""
    def slot_info(self, slot: int) -> tuple[int, int, int]:
        """(key, group id, line) at a slot."""
    def buffers(self) -> tuple[_Buffer, _Buffer, _Buffer, _Buffer]:
        """The (keys, groups, lines, directory) buffers, for writing a snapshot."""
    def table_bytes(self) -> int:
        """Bytes of the lookup structure (keys, group ids, directory)."""
    def side_bytes(self) -> int:
        """Bytes of the explanation side table (one source line per key)."""

class TableBuilder:
    """Collects (key, group, line) records, then sorts, merges and indexes them."""

    @property
    def k0(self) -> int: ...
    @property
    def k1(self) -> int: ...
    @property
    def markers(self) -> bool: ...
    def __new__(cls, secret: bytes, markers: bool = True) -> TableBuilder: ...
    def add_name(self, name: str, group: int, line: int) -> None:
        """Add a normalised name (ASCII) and, as markers, every proper suffix of it."""
    def add_name_run(self, entries: list[Entry], start: int, end: int, group: int) -> None:
        """`add_name` for entries[start:end] (filtercore Entry tuples)."""
    def add_key(self, key: int, group: int, line: int) -> None:
        """Add a precomputed key (an IP literal's or a SHA-256 prefix), with no markers."""
    def hash_name(self, name: str) -> int: ...
    def __len__(self) -> int: ...
    def build(self, merge: Callable[[int, int], int]) -> DomainTable:
        """Sort, merge duplicate keys and index; return a DomainTable."""

@final
class MatchCore:
    """Domain verdicts over a plain table and an optional SHA-256 table.

    A walk answers with a code: -1 when no domain entry decides, otherwise
    `slot << 3 | self << 2 | table << 1 | allow`.
    """

    @property
    def plain(self) -> DomainTable: ...
    @property
    def hashed(self) -> DomainTable: ...
    def __new__(
        cls,
        plain: DomainTable,
        hashed: DomainTable,
        flags: list[int],
        self_cats: list[int],
        below_cats: list[int],
    ) -> MatchCore: ...
    def walk(self, name: str, mask: int = ...) -> int:
        """The code of the domain entry that decides `name`."""
    def walk_normalized(self, name: str, mask: int = ...) -> int:
        """`walk` for a name already normalised."""
    def walk_many(self, names: Iterable[str], mask: int = ...) -> list[int | None]:
        """`walk` for each name; an invalid name gives None in its place."""
    def exact(self, key_text: str, mask: int = ...) -> int:
        """The code of an exact (non-walking) plain-table key, such as an IP literal's."""
    def hashed_exact(self, key: int, mask: int = ...) -> int:
        """The code of a key in the SHA-256 table (URL expressions), matched exactly."""

class VerdictCache:
    """Turns walk codes into shared Verdict objects; the batch path stays in C."""

    def __new__(
        cls,
        core: MatchCore,
        no_match: Verdict,
        # make(code, name, mask) -> Verdict; code -1 asks for text rules, -2 for the IP path.
        make: Callable[..., Verdict],
        text_rules: bool,
    ) -> VerdictCache: ...
    def check(self, name: str, mask: int = ...) -> Verdict: ...
    def check_many(self, names: Iterable[str], mask: int = ...) -> list[Verdict]: ...
