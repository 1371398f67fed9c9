"""The README's "Try it" block works on a fresh machine: every command, run as written in a
fresh virtualenv from a copy of the checkout, exits as its comment says; and no newcomer is
sent to `../shared` (the README, docs/ and every `--help`).

The virtualenv is fresh (`python -m venv --without-pip`: its own prefix and `bin/`, nothing
installed), then set up as `pip install -e .` would leave it, without the minutes that
rebuilding the Cython extensions and fetching the dependencies again would cost (and the
network it would need): a `.pth` file puts the checkout on `sys.path` (what an editable
install does; its extensions are already built in place) and the dependencies of the test
environment (read-only, its site-packages folder), and `bin/filterdns` is the console script
pip writes from pyproject's `[project.scripts]`. The commands run through `bash -c` with
that `bin/` first on PATH, from a folder whose entries link to the checkout's, so relative
paths work and files the commands write stay in the test's temporary folder.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from filterdns.cli import build_parser
from tests.dns_resolver.harness import REPO_ROOT

pytestmark = pytest.mark.timeout(180)

_EXIT = re.compile(r"\(exit (\d+)\)")


def try_it_commands() -> list[tuple[str, int]]:
    """(command, expected exit status) for each line of the first ```sh block under
    "## Try it"; the status is the comment's `(exit N)`, else 0."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Try it\n", 1)[1]
    block = section.split("```sh\n", 1)[1].split("\n```", 1)[0]
    commands = []
    for line in block.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        command, _, comment = line.partition("  #")
        match = _EXIT.search(comment)
        commands.append((command.strip(), int(match.group(1)) if match else 0))
    return commands


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60
    )
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.strip()
    deps = sysconfig.get_paths()["purelib"]  # this environment's installed packages
    (Path(site) / "filterdns-checkout.pth").write_text(f"{REPO_ROOT}\n{deps}\n")
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for name, target in scripts.items():
        module, func = target.split(":")
        script = venv / "bin" / name
        script.write_text(
            f"#!{python}\nimport sys\nfrom {module} import {func}\nsys.exit({func}())\n"
        )
        script.chmod(0o755)
    return venv


@pytest.fixture
def checkout_copy(tmp_path: Path) -> Path:
    """A folder that looks like the checkout (links to its entries) and takes new files."""
    for entry in REPO_ROOT.iterdir():
        if not entry.name.startswith("."):
            (tmp_path / entry.name).symlink_to(entry)
    return tmp_path


def _env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    own_bin = str(Path(sys.executable).parent)
    path = [p for p in env.get("PATH", "").split(":") if p and p != own_bin]
    env["PATH"] = ":".join([str(venv / "bin"), *path])
    return env


def test_the_try_it_block_is_there() -> None:
    commands = try_it_commands()
    assert len(commands) >= 8
    assert commands[0] == ("filterdns --version", 0)
    assert {status for _c, status in commands} == {0, 1}


def test_every_try_it_command_exits_as_documented(fresh_venv: Path, checkout_copy: Path) -> None:
    env = _env(fresh_venv)
    assert shutil.which("filterdns", path=env["PATH"]) == str(fresh_venv / "bin" / "filterdns")
    failures = []
    for command, expected in try_it_commands():
        result = subprocess.run(
            ["bash", "-c", command], cwd=checkout_copy, env=env,
            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        )
        if result.returncode != expected or "Traceback" in result.stderr:
            failures.append(
                f"{command}: exit {result.returncode}, documented {expected}\n{result.stderr}"
            )
        if command == "filterdns --version":
            from filterdns import __version__

            assert result.stdout.strip() == f"filterdns {__version__}"
    assert not failures, "\n".join(failures)
    assert (checkout_copy / "ut1.snap").is_file()  # written here, not in the checkout
    assert not (REPO_ROOT / "ut1.snap").exists()


def _help_texts(parser: argparse.ArgumentParser) -> Iterator[str]:
    yield parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _help_texts(sub)


def test_nothing_points_newcomers_at_shared() -> None:
    pages = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").rglob("*.md"))]
    for page in pages:
        assert "../shared" not in page.read_text(encoding="utf-8"), page
    helps = list(_help_texts(build_parser()))
    assert len(helps) > 10  # every command and sub-command
    assert not [text for text in helps if "../shared" in text]
    assert "doctor" in helps[0]
