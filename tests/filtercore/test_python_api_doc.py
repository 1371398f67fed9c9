"""Every ```python block of docs/python-api.md runs, in order, in an empty folder.

The blocks share one namespace (a later block uses what an earlier one built), as a reader
following the guide would; the guide writes the small list files it needs itself.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "python-api.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def guide_blocks() -> list[str]:
    """The source of each ```python block, in order."""
    return BLOCK.findall(GUIDE.read_text())


def test_guide_has_examples() -> None:
    assert len(guide_blocks()) >= 8


def test_guide_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "python_api_guide"}
    for number, source in enumerate(guide_blocks(), 1):
        code = compile(source, f"{GUIDE.name} block {number}", "exec")
        exec(code, namespace)  # noqa: S102 - running the documentation is the test
