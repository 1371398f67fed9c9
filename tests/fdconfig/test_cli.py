"""`filterdns serve --check-config` and `filterdns config show`, run as a user runs them."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from fdconfig import load_config
from fdconfig.show import show

REPO = Path(__file__).resolve().parents[2]


def filterdns(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "filterdns", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("colour = 1\n", "colour: unknown key"),
        ("[cache]\nttl = 3\n", "cache.ttl: unknown key"),
        ('[policies.kids]\nblok = ["adult"]\n', "policies.kids.blok: unknown key"),
        ('[cache]\nmax_entries = "many"\n', "cache.max_entries: must be an integer, got a string"),
        ("[cache]\nserve_stale = 1\n", "cache.serve_stale: must be a boolean, got an integer"),
        ("server = 3\n", "server: must be a table, got an integer"),
        (
            '[upstream]\nservers = ["dns.google"]\n',
            "upstream.servers[0]: 'dns.google' is not an IP address",
        ),
        (
            '[server]\nlisten = ["127.0.0.1:99999"]\n',
            "server.listen[0]: '127.0.0.1:99999': port 99999 is outside 1..65535",
        ),
        (
            '[access]\ndeny = ["10.0.0.0/33"]\n',
            "access.deny[0]: '10.0.0.0/33' is not a CIDR (like 10.0.0.0/8 or fc00::/7)",
        ),
        (
            '[[lists]]\nurl = "https://lists.example/l.txt"\nrefresh = "soon"\n',
            'lists[0].refresh: must be seconds or a duration like "30m", "6h", "1d", got "soon"',
        ),
        (
            '[upstream]\nstrategy = "fast"\n',
            'upstream.strategy: must be "failover" or "parallel", got "fast"',
        ),
        (
            '[server]\nworkers = "many"\n',
            'server.workers: must be an integer between 1 and 256 or "auto", got "many"',
        ),
        (
            "[server]\nudp_payload_size = 100\n",
            "server.udp_payload_size: must be between 512 and 65535, got 100",
        ),
        ("[upstream]\ntimeout = inf\n", "upstream.timeout: must be a finite number, got inf"),
        ('[[lists]]\npath = "gone.txt"\n', "lists[0].path: {dir}/gone.txt: no such file or folder"),
        (
            '[[lists]]\nname = "x"\n',
            "lists[0].path: is required (a file, folder, archive or http(s) URL)",
        ),
    ],
)
def test_each_mistake_is_one_line_naming_file_and_key(tmp_path: Path, text: str, line: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    result = filterdns("serve", "--check-config", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    expected = line.replace("{dir}", str(tmp_path))
    assert result.stderr == f"filterdns: invalid config: {path}: {expected}\n"


def test_a_valid_file_passes(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[upstream]\nservers = ["192.0.2.1"]\n')
    result = filterdns("serve", "--check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{path}: OK")


FULL = """
[server]
listen = ["127.0.0.1:5300", "[::1]:5300"]
data_dir = "state"
workers = 2

[upstream]
servers = ["192.0.2.1", "[2001:db8::1]:5353"]
strategy = "parallel"

[cache]
serve_stale = true
min_ttl = 5

[blocking]
mode = "ip"
ipv4 = "192.0.2.80"

[access]
allow = ["10.0.0.0/8", "::1"]
deny = ["10.1.2.0/24"]

[metrics]
listen = ""

[querylog]
enabled = true
path = "q.log"

[admin]
enabled = true
listen = "127.0.0.1:8181"

[reports]
trusted_proxies = ["192.0.2.0/24"]

[[lists]]
path = "adult.txt"
category = "adult"
name = "mine"

[[lists]]
url = "https://lists.example/ut1/blacklists.tar.gz"
refresh = "6h"

[[lists]]
path = "allow.txt"
action = "allow"

[clients]
trusted_forwarders = ["192.168.1.1"]

[policies.kids]
clients = ["10.0.5.0/24"]
macs = ["02-00-5E-10-00-01"]
block = ["adult", "games"]
lists = ["mine"]
mode = "nxdomain"
timezone = "Europe/Paris"
youtube = "strict"
block_domains = ["Extra.Example"]

[[policies.kids.schedule]]
days = ["weekdays"]
start = "21:00"
end = "07:00"
block = ["social"]

[[policies.kids.allowance]]
category = "games"
minutes = 30

[blockpage]
enabled = true
https_listen = "127.0.0.1:8443"
"""


def test_config_show_loads_back_to_the_same_config(tmp_path: Path) -> None:
    (tmp_path / "adult.txt").write_text("adult.example\n")
    (tmp_path / "allow.txt").write_text("school.example\n")
    path = tmp_path / "config.toml"
    path.write_text(FULL)
    config = load_config(path, resolv_conf=str(tmp_path / "none"))
    result = filterdns("config", "show", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == show(config)
    # Beside the original (server.data_dir stays relative to the file's folder).
    shown = tmp_path / "shown.toml"
    shown.write_text(result.stdout)
    again = load_config(shown, resolv_conf=str(tmp_path / "none"))
    assert again == dataclasses.replace(config, source=str(shown))
    assert "cache.min_ttl" not in result.stdout and "min_ttl = 5" in result.stdout
    assert 'form_url = "http://127.0.0.1:8181/api/reports"' in result.stdout  # filled in


def test_config_show_of_the_embedded_default() -> None:
    result = filterdns("config", "show")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# The effective configuration of the embedded default")
    assert 'listen = [\n    "127.0.0.1:5353",\n]' in result.stdout


def test_config_show_data_dir_flag(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[server]\ndata_dir = "file-dir"\n[querylog]\npath = "q.log"\n')
    result = filterdns(
        "config", "show", "--config", str(path), "--data-dir", "flag-dir", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert f'data_dir = "{tmp_path / "flag-dir"}"' in result.stdout
    assert f'path = "{tmp_path / "flag-dir" / "q.log"}"' in result.stdout
