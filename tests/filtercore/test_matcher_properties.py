"""Property tests: the Cython matcher agrees with the plain-Python reference model."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from filtercore import ListSpec, Matcher
from filtercore.entries import Scope
from filtercore.normalize import normalize_name
from tests.filtercore.reference_model import ModelEntry, model_check

# A small label alphabet, so random entries and queries nest inside each other often.
LABELS = ["a", "b", "c", "xn--bcher-kva", "bücher", "x-y", "0"]
CATEGORIES = ["adult", "gambling"]

label = st.sampled_from(LABELS)
names = st.lists(label, min_size=1, max_size=5).map(".".join)
entry = st.tuples(
    names,
    st.sampled_from(["subtree", "exact", "below", "allow", "allow-exact"]),
    st.sampled_from(CATEGORIES),
)
queries = st.tuples(
    names,
    st.booleans(),  # trailing dot
    st.booleans(),  # upper case
    st.lists(label, max_size=8).map(".".join),  # extra depth
)


def _write_lists(folder: Path, entries: list[tuple[str, str, str]]) -> list[ListSpec]:
    """One AdBlock file and one wildcard domains file per category."""
    specs = []
    for category in CATEGORIES:
        adblock, wildcard = [], []
        for name, kind, cat in entries:
            if cat != category:
                continue
            a = normalize_name(name)
            if kind == "subtree":
                adblock.append(f"||{a}^")
            elif kind == "exact":
                adblock.append(f"|{a}^")
            elif kind == "allow":
                adblock.append(f"@@||{a}^")
            elif kind == "allow-exact":
                adblock.append(f"@@|{a}^")
            else:
                wildcard.append(f"*.{a}")
        (folder / f"{category}.adblock").write_text("\n".join(adblock) + "\n")
        (folder / f"{category}.wild").write_text("\n".join(wildcard) + "\n")
        specs.append(
            ListSpec(str(folder / f"{category}.adblock"), category=category, format="adblock")
        )
        specs.append(
            ListSpec(str(folder / f"{category}.wild"), category=category, format="domains")
        )
    return specs


def _model_entries(entries: list[tuple[str, str, str]]) -> list[ModelEntry]:
    scopes = {
        "subtree": (False, Scope.SUBTREE),
        "exact": (False, Scope.SELF),
        "below": (False, Scope.BELOW),
        "allow": (True, Scope.SUBTREE),
        "allow-exact": (True, Scope.SELF),
    }
    out = []
    for name, kind, category in entries:
        allow, scope = scopes[kind]
        out.append(ModelEntry(normalize_name(name), allow, scope, category))
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    entries=st.lists(entry, max_size=25),
    probes=st.lists(queries, min_size=1, max_size=20),
    categories=st.sampled_from([None, ["adult"], ["gambling"], []]),
)
def test_matcher_agrees_with_the_reference_model(
    entries: list[tuple[str, str, str]],
    probes: list[tuple[str, bool, bool, str]],
    categories: list[str] | None,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        matcher = Matcher.from_lists(_write_lists(Path(tmp), entries))
        model = _model_entries(entries)
        texts = []
        for base, dot, upper, prefix in probes:
            text = f"{prefix}.{base}" if prefix else base
            text = text.upper() if upper else text
            texts.append(text + "." if dot else text)
        wanted = None if categories is None else set(categories)
        verdicts = matcher.check_many(texts, categories=categories)
        for text, verdict in zip(texts, verdicts, strict=True):
            single = matcher.check(text, categories=categories)
            expected = model_check(model, text, wanted)
            assert (verdict.action.value, verdict.matched) == expected, text
            assert single == verdict
