"""`[ratelimit]`: defaults, parsed values and one-line errors naming the key."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from fdconfig import ConfigError, load_config
from fdconfig.ratelimit import RateLimitConfig


def load(tmp_path: Path, text: str) -> RateLimitConfig:
    path = tmp_path / "config.toml"
    path.write_text('[upstream]\nservers = ["192.0.2.53"]\n' + text)
    return load_config(path).ratelimit


def test_off_by_default_with_the_documented_defaults(tmp_path: Path) -> None:
    assert load(tmp_path, "") == RateLimitConfig(
        enabled=False, qps=20.0, burst=100, ipv4_prefix=24, ipv6_prefix=56,
        action="truncate", exempt=(), max_networks=65_536,
    )


def test_values_are_parsed(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        '[ratelimit]\nenabled = true\nqps = 5\nburst = 10\nipv4_prefix = 32\n'
        'ipv6_prefix = 64\naction = "drop"\nexempt = ["10.1.2.3", "2001:db8::/32"]\n',
    )
    assert (config.enabled, config.qps, config.burst, config.action) == (True, 5.0, 10, "drop")
    assert (config.ipv4_prefix, config.ipv6_prefix) == (32, 64)
    assert config.exempt == (
        ipaddress.ip_network("10.1.2.3/32"), ipaddress.ip_network("2001:db8::/32")
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'action = "slow"',
            'ratelimit.action: must be "drop", "refused" or "truncate", got "slow"',
        ),
        ("qps = 0", "ratelimit.qps: must be a positive number, got 0"),
        ("burst = 0", "ratelimit.burst: must be >= 1, got 0"),
        ("ipv4_prefix = 33", "ratelimit.ipv4_prefix: must be between 1 and 32, got 33"),
        ("ipv6_prefix = 0", "ratelimit.ipv6_prefix: must be between 1 and 128, got 0"),
        ('exempt = ["10.0.0.0/33"]', "ratelimit.exempt[0]: '10.0.0.0/33' is not a CIDR"),
        ("rate = 5", "ratelimit.rate: unknown key"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, f"[ratelimit]\n{text}\n")
    assert f"config.toml: {message}" in str(caught.value)
