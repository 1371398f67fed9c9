"""The public filtercore modules are mypy-clean, and the Cython stubs match the extensions.

mypy is a test dependency. `stubtest` imports the built extensions and compares every
name and signature in `_table.pyi` / `_digest.pyi` with the runtime objects, so a stub
cannot drift from the `.pyx` it describes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PUBLIC_MODULES = [
    "filtercore/__init__.py",
    "filtercore/matcher.py",
    "filtercore/verdict.py",
    "filtercore/listspec.py",
    "filtercore/errors.py",
    "filtercore/snapshot.py",
]
# Cython's own module attributes, which no stub describes.
STUBTEST_ALLOWLIST = r"""
filtercore\._(table|digest)\.__test__
filtercore\._table\.__pyx_capi__
filtercore\._table\.__(reduce|setstate)_cython__
"""


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=240
    )


def test_public_modules_are_mypy_clean() -> None:
    result = _run("mypy", "--no-incremental", "--cache-dir=/dev/null", *PUBLIC_MODULES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_extension_stubs_match_runtime(tmp_path: Path) -> None:
    allowlist = tmp_path / "allowlist.txt"
    allowlist.write_text(STUBTEST_ALLOWLIST)
    result = _run(
        "mypy.stubtest",
        "filtercore._table",
        "filtercore._digest",
        # PEP 800 markers are newer than the typing this project targets.
        "--ignore-disjoint-bases",
        "--allowlist",
        str(allowlist),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_guide_examples_type_check(tmp_path: Path) -> None:
    """The examples of docs/python-api.md, as user code, pass mypy against the package."""
    from tests.filtercore.test_python_api_doc import guide_blocks

    example = tmp_path / "guide_examples.py"
    example.write_text("\n".join(guide_blocks()))
    result = _run("mypy", "--no-incremental", "--cache-dir=/dev/null", str(example))
    assert result.returncode == 0, result.stdout + result.stderr


def test_package_is_marked_typed() -> None:
    assert (ROOT / "filtercore" / "py.typed").exists()
