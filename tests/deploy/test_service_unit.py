"""deploy/: the systemd unit and the sample production config.

The unit is checked twice: its keys are parsed here (what it must say: unprivileged user,
one capability, restart, SIGHUP reload, state directory), and `systemd-analyze verify`
(from the `systemd` package) checks it the way systemd will read it. verify needs every
command in the unit to exist, so it runs on a copy whose /usr/local/bin/filterdns points at
this checkout. It works without systemd running as PID 1 (as in a container).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "filterdns.service"
SYSUSERS = ROOT / "deploy" / "systemd" / "filterdns.sysusers"
CONFIG = ROOT / "deploy" / "filterdns.toml"
INSTALLED_COMMAND = "/usr/local/bin/filterdns"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values in order]}}; systemd allows a key more than once."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        header = re.fullmatch(r"\[([A-Za-z]+)\]", line)
        if header:
            current = sections.setdefault(header.group(1), {})
            continue
        assert current is not None, f"line {number}: a key outside any section"
        key, sep, value = line.partition("=")
        assert sep, f"line {number}: not KEY=VALUE: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_unit_keys() -> None:
    unit = parse_unit(UNIT.read_text())
    service = unit["Service"]

    def one(key: str) -> str:
        assert len(service.get(key, [])) == 1, f"{key}: {service.get(key)}"
        return service[key][0]

    assert one("User") == "filterdns" and one("Group") == "filterdns"
    assert one("AmbientCapabilities") == "CAP_NET_BIND_SERVICE"
    assert one("CapabilityBoundingSet") == "CAP_NET_BIND_SERVICE"
    assert one("NoNewPrivileges") == "yes"
    assert one("Restart") == "on-failure"
    assert one("ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one("StateDirectory") == "filterdns"
    assert one("ExecStart") == f"{INSTALLED_COMMAND} serve --config /etc/filterdns/filterdns.toml"
    assert one("ProtectSystem") == "strict"  # so the state directory is the only writable one
    assert "AF_INET" in one("RestrictAddressFamilies").split()
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    # The account the unit runs as is created by the sysusers entry.
    assert re.search(r"^u filterdns\s", SYSUSERS.read_text(), re.MULTILINE)


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: install the Debian package `systemd`"
    command = tmp_path / "filterdns"
    command.write_text(f'#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m filterdns "$@"\n')
    command.chmod(0o755)
    unit = tmp_path / "filterdns.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED_COMMAND, str(command)))
    result = subprocess.run(
        [analyze, "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"},
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # Unknown keys, bad values and unsafe settings are only warnings: fail on any line
    # about our unit.
    problems = [line for line in output.splitlines() if "filterdns.service" in line]
    assert not problems, output


def test_sample_config_passes_check_config() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "filterdns", "serve", "--check-config", str(CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def test_sample_config_comments_every_setting() -> None:
    """Each `key = value` line follows a comment line (or another commented key)."""
    lines = CONFIG.read_text().splitlines()
    uncommented = []
    for i, line in enumerate(lines):
        if re.match(r"^[a-z_0-9]+\s*=", line):
            j = i - 1
            while j >= 0 and re.match(r"^[a-z_0-9]+\s*=", lines[j]):
                j -= 1  # keys grouped under one comment (ipv4/ipv6)
            if j < 0 or not lines[j].startswith("#"):
                uncommented.append(line)
    assert not uncommented, uncommented
