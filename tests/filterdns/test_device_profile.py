"""`filterdns device-profile`, run as a real process: the profile read back with plistlib,
field by field, and the errors for bad input."""

from __future__ import annotations

import plistlib
import uuid
from pathlib import Path

import pytest

from filterdns.device_profile import ProfileError, client_id, server_name
from tests.filterdns.test_cli import run


def _profile(path: Path) -> dict:  # type: ignore[type-arg]
    with path.open("rb") as f:
        return plistlib.load(f)


def _check_envelope(profile: dict, dns: dict) -> None:  # type: ignore[type-arg]
    assert profile["PayloadType"] == "Configuration"
    assert profile["PayloadVersion"] == 1
    assert profile["PayloadIdentifier"] == "org.example.dns.filterdns.kid1"
    assert profile["PayloadDisplayName"] == "Filtered DNS (kid1)"
    assert "dns.example.org" in profile["PayloadDescription"]
    assert profile["PayloadRemovalDisallowed"] is False
    assert dns["PayloadType"] == "com.apple.dnsSettings.managed"
    assert dns["PayloadVersion"] == 1
    assert dns["PayloadIdentifier"].startswith("org.example.dns.filterdns.kid1.")
    assert dns["PayloadDisplayName"].startswith("dns.example.org (DNS over ")
    uuids = {profile["PayloadUUID"], dns["PayloadUUID"]}
    assert len(uuids) == 2
    for text in uuids:
        assert str(uuid.UUID(text)).upper() == text


def test_doh_profile_field_by_field_and_the_printed_settings(tmp_path: Path) -> None:
    out = tmp_path / "phone.mobileconfig"
    result = run("device-profile", "--client-id", "Kid1", "--server-name", "DNS.example.org.",
                 "--address", "192.0.2.53", "--address", "2001:db8::53", "--output", str(out))
    assert result.returncode == 0, result.stderr
    profile = _profile(out)
    assert set(profile) == {
        "PayloadType", "PayloadVersion", "PayloadIdentifier", "PayloadUUID",
        "PayloadDisplayName", "PayloadDescription", "PayloadRemovalDisallowed",
        "PayloadContent",
    }
    [dns] = profile["PayloadContent"]
    _check_envelope(profile, dns)
    assert dns["PayloadIdentifier"] == "org.example.dns.filterdns.kid1.dns.https"
    assert dns["DNSSettings"] == {
        "DNSProtocol": "HTTPS",
        "ServerURL": "https://dns.example.org/dns-query/kid1",
        "ServerAddresses": ["192.0.2.53", "2001:db8::53"],
    }
    lines = result.stdout.splitlines()
    assert "Android Private DNS host name: kid1.dns.example.org" in lines
    assert "DoH template (browsers, Windows 11): https://dns.example.org/dns-query/kid1" in lines
    windows = [line for line in lines if "Add-DnsClientDohServerAddress" in line]
    assert len(windows) == 2
    assert "-ServerAddress 192.0.2.53 -DohTemplate https://dns.example.org/dns-query/kid1" in (
        windows[0]
    )


def test_dot_profile_names_the_device_in_the_server_name(tmp_path: Path) -> None:
    result = run("device-profile", "--client-id", "kid1", "--server-name", "dns.example.org",
                 "--dot", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    profile = _profile(tmp_path / "kid1.mobileconfig")  # the default file name
    [dns] = profile["PayloadContent"]
    _check_envelope(profile, dns)
    assert dns["PayloadIdentifier"] == "org.example.dns.filterdns.kid1.dns.tls"
    assert dns["DNSSettings"] == {"DNSProtocol": "TLS", "ServerName": "kid1.dns.example.org"}
    assert "(DoT, kid1.dns.example.org)" in result.stdout
    assert "Add-DnsClientDohServerAddress" not in result.stdout


def test_the_same_device_gets_the_same_profile_twice(tmp_path: Path) -> None:
    args = ("device-profile", "--client-id", "kid2", "--server-name", "dns.example.org")
    assert run(*args, "-o", str(tmp_path / "a")).returncode == 0
    assert run(*args, "-o", str(tmp_path / "b")).returncode == 0
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    other = run("device-profile", "--client-id", "kid3", "--server-name", "dns.example.org",
                "-o", str(tmp_path / "c"))
    assert other.returncode == 0
    assert _profile(tmp_path / "c")["PayloadUUID"] != _profile(tmp_path / "a")["PayloadUUID"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--client-id", "kid_1", "--server-name", "dns.example.org"), "is not a ClientID"),
        (("--client-id", "kid.1", "--server-name", "dns.example.org"), "is not a ClientID"),
        (("--client-id", "a" * 64, "--server-name", "dns.example.org"), "is not a ClientID"),
        (("--client-id", " ", "--server-name", "dns.example.org"), "is not a ClientID"),
        (("--client-id", "kid1", "--server-name", "localhost"), "is not a host name"),
        (("--client-id", "kid1", "--server-name", "dns..org"), "is not a host name"),
        (("--client-id", "kid1", "--server-name", "dns.example.org", "--address", "dns"),
         "is not an IP address"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    result = run("device-profile", *args, cwd=tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("filterdns device-profile: error: ")
    assert message in line
    assert list(tmp_path.iterdir()) == []


def test_dot_and_doh_exclude_each_other(tmp_path: Path) -> None:
    result = run("device-profile", "--client-id", "kid1", "--server-name", "dns.example.org",
                 "--dot", "--doh", cwd=tmp_path)
    assert result.returncode == 2
    assert "not allowed with argument" in result.stderr


def test_an_unwritable_output_is_an_error(tmp_path: Path) -> None:
    result = run("device-profile", "--client-id", "kid1", "--server-name", "dns.example.org",
                 "-o", str(tmp_path / "missing" / "x.mobileconfig"))
    assert result.returncode == 2
    assert "cannot write" in result.stderr


def test_validators_normalise() -> None:
    assert client_id(" KID-1 ") == "kid-1"
    assert client_id("a" * 63) == "a" * 63
    assert server_name("Dns.Example.org.") == "dns.example.org"
    with pytest.raises(ProfileError, match="too long"):
        server_name(".".join(["a" * 60] * 4))
