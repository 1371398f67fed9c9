"""`filterdns device-profile`: what a device needs to use its own encrypted endpoint.

Writes an Apple configuration profile (`.mobileconfig`, one `com.apple.dnsSettings.managed`
payload) for iPhone, iPad and Mac, and prints the Android Private DNS host name and the DoH
template for browsers and Windows 11. The ClientID travels as the first label of the TLS
server name (DoT, DoQ: `kid1.dns.example.org`) or as the last segment of the DoH path
(`https://dns.example.org/dns-query/kid1`). See docs/devices.md.
"""

from __future__ import annotations

import argparse
import ipaddress
import plistlib
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fdconfig.tls import parse_client_id, parse_server_name

DOH_PATH = "/dns-query"
# A fixed namespace: the same device and server always get the same UUIDs, so a profile
# written again is the same profile (and installing it replaces the old one).
_NAMESPACE = uuid.UUID("5c1f0b7e-6d0a-4f43-9a7e-2b8f1c6d4e11")


class ProfileError(ValueError):
    """Bad input for a device profile; the message is one line for the user."""


def client_id(text: str) -> str:
    """`text` as a ClientID, by the rule the config's `client_ids` follow (one DNS label,
    case-insensitive), lower-cased; raises ProfileError saying what is wrong."""
    try:
        return parse_client_id(text)
    except ValueError as exc:
        raise ProfileError(f"client id: {exc}") from None


def server_name(text: str) -> str:
    """`text` as the resolver's TLS server name (`[tls] server_name`), lower-cased,
    trailing dot removed; raises ProfileError saying what is wrong."""
    try:
        value = parse_server_name(text)
    except ValueError as exc:
        raise ProfileError(f"server name: {exc}") from None
    if len(value) > 253 - 64:
        # The device's name (ClientID + ".") must still fit in a 253-character name.
        raise ProfileError(f"server name {text!r} is too long to put a client id in front")
    return value


@dataclass(frozen=True)
class Endpoints:
    """Where one device sends its queries."""

    client_id: str
    server_name: str

    @property
    def tls_name(self) -> str:
        """DoT/DoQ server name, also Android's Private DNS host name."""
        return f"{self.client_id}.{self.server_name}"

    @property
    def doh_url(self) -> str:
        """The DoH URL (RFC 8484 template without variables: POST and `?dns=` GET)."""
        return f"https://{self.server_name}{DOH_PATH}/{self.client_id}"


def mobileconfig(
    ends: Endpoints, protocol: str, addresses: list[str] | None = None
) -> dict[str, Any]:
    """The configuration profile for `ends` over `protocol` ("HTTPS" or "TLS") as a dict
    for plistlib; `addresses` (optional) lets the device skip resolving the server name."""
    if protocol not in ("HTTPS", "TLS"):
        raise ProfileError(f"protocol must be HTTPS or TLS, not {protocol!r}")
    settings: dict[str, Any] = {"DNSProtocol": protocol}
    if protocol == "HTTPS":
        settings["ServerURL"] = ends.doh_url
    else:
        settings["ServerName"] = ends.tls_name
    if addresses:
        settings["ServerAddresses"] = list(addresses)
    base = ".".join(reversed(ends.server_name.split(".")))
    top_id = f"{base}.filterdns.{ends.client_id}"
    dns_id = f"{top_id}.dns.{protocol.lower()}"
    kind = "DNS over HTTPS" if protocol == "HTTPS" else "DNS over TLS"
    return {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": top_id,
        "PayloadUUID": str(uuid.uuid5(_NAMESPACE, dns_id + "/profile")).upper(),
        "PayloadDisplayName": f"Filtered DNS ({ends.client_id})",
        "PayloadDescription": (
            f"Sends this device's DNS queries to {ends.server_name} ({kind}), "
            f"which filters them as device {ends.client_id}."
        ),
        "PayloadRemovalDisallowed": False,
        "PayloadContent": [
            {
                "PayloadType": "com.apple.dnsSettings.managed",
                "PayloadVersion": 1,
                "PayloadIdentifier": dns_id,
                "PayloadUUID": str(uuid.uuid5(_NAMESPACE, dns_id)).upper(),
                "PayloadDisplayName": f"{ends.server_name} ({kind})",
                "DNSSettings": settings,
            }
        ],
    }


def register(subparsers: Any) -> None:
    """Add `device-profile` to the `filterdns` sub-commands."""
    parser = subparsers.add_parser(
        "device-profile",
        help="write an Apple profile and print Android/Windows/browser settings for a device",
        description="Write an Apple configuration profile (.mobileconfig) that sends an "
        "iPhone, iPad or Mac's DNS to this resolver over DoH (default) or DoT as CLIENT_ID, "
        "and print the Android Private DNS host name and the DoH template for browsers and "
        "Windows 11. The ClientID is a name the device presents, not a secret: prefer "
        "random ones. See docs/devices.md.",
    )
    parser.add_argument("--client-id", required=True, metavar="CLIENT_ID",
                        help="the device's ClientID, a DNS label (e.g. kid1)")
    parser.add_argument("--server-name", required=True, metavar="NAME",
                        help="the resolver's TLS server name ([tls] server_name), "
                        "e.g. dns.example.org")
    proto = parser.add_mutually_exclusive_group()
    proto.add_argument("--doh", dest="protocol", action="store_const", const="HTTPS",
                       help="DNS over HTTPS in the profile (the default)")
    proto.add_argument("--dot", dest="protocol", action="store_const", const="TLS",
                       help="DNS over TLS in the profile")
    parser.add_argument("--address", dest="addresses", action="append", default=[],
                        metavar="IP", help="the resolver's IP address (repeatable): put in "
                        "the profile and in the Windows command")
    parser.add_argument("--output", "-o", type=Path, metavar="FILE",
                        help="where to write the profile (default CLIENT_ID.mobileconfig)")
    parser.set_defaults(func=run, protocol="HTTPS")


def run(args: argparse.Namespace) -> int:
    """`filterdns device-profile`; returns the exit status (2 on bad input)."""
    try:
        ends = Endpoints(client_id(args.client_id), server_name(args.server_name))
        addresses = [_address(a) for a in args.addresses]
    except ProfileError as exc:
        print(f"filterdns device-profile: error: {exc}", file=sys.stderr)
        return 2
    output: Path = args.output or Path(f"{ends.client_id}.mobileconfig")
    profile = mobileconfig(ends, args.protocol, addresses)
    try:
        output.write_bytes(plistlib.dumps(profile, fmt=plistlib.FMT_XML))
    except OSError as exc:
        print(f"filterdns device-profile: error: cannot write {output}: {exc.strerror}",
              file=sys.stderr)
        return 2
    where = ends.doh_url if args.protocol == "HTTPS" else ends.tls_name
    print(f"Apple profile (iPhone, iPad, Mac): {output} "
          f"({'DoH' if args.protocol == 'HTTPS' else 'DoT'}, {where})")
    print(f"Android Private DNS host name: {ends.tls_name}")
    print(f"DoH template (browsers, Windows 11): {ends.doh_url}")
    for address in addresses:
        print(
            "Windows 11 (PowerShell as administrator): Add-DnsClientDohServerAddress "
            f"-ServerAddress {address} -DohTemplate {ends.doh_url} -AllowFallbackToUdp $False"
        )
    return 0


def _address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise ProfileError(f"--address {text!r} is not an IP address") from None
