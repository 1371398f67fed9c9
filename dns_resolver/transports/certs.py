"""The encrypted listeners' TLS: the certificate (`[tls]` cert and key, or a self-signed one
generated once into the data directory), the server contexts of DoT and DoH, the ClientID
read from the TLS server name, and their renewal.

`ServerTls` holds one `ssl.SSLContext` per kind of listener (ALPN `dot` for DoT, `h2` and
`http/1.1` for DoH). Every handshake takes the context in force when it starts, so
replacing the contexts never disturbs a connection: they are rebuilt when the config is
reloaded (SIGHUP: the files are read again even when their paths did not change), when
the files change on disk (`poll`, by modification time and size), and every
`ticket_rotation` (OpenSSL keys session tickets per context, so a new context is a new
ticket key; a ticket from before gets a full handshake). Files that cannot be loaded keep
the contexts in force, with an error logged.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import logging
import os
import ssl
import time
from pathlib import Path

from fdconfig.tls import TlsConfig

log = logging.getLogger(__name__)

SELF_SIGNED_FILE = "self-signed.pem"
"""The generated key and certificate, one PEM file in `[tls]`'s `self_signed_dir`."""
SELF_SIGNED_DAYS = 825  # the longest validity Apple's clients accept for a server certificate
ALPN = {"tls": ("dot",), "https": ("h2", "http/1.1")}
CLIENT_ID_ATTRIBUTE = "filterdns_client_id"
"""Set on the handshake's `SSLObject` by the server name callback: the ClientID or None."""


class CertificateError(Exception):
    """The certificate or key cannot be loaded; the message names the file."""


def self_signed(folder: Path, server_name: str) -> Path:
    """The self-signed key and certificate in `folder`, generated when absent or expired.

    Workers may race to generate it: each writes its own file and links it into place,
    so all of them end up serving the one that landed first.
    """
    path = folder / SELF_SIGNED_FILE
    if path.is_file() and not _expired(path):
        return path
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = server_name or "filterdns"
    now = dt.datetime.now(dt.UTC)
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    if server_name:
        # Every ClientID's name (kid1.dns.example.org) is covered too.
        names[:0] = [x509.DNSName(server_name), x509.DNSName(f"*.{server_name}")]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ) + cert.public_bytes(serialization.Encoding.PEM)
    folder.mkdir(parents=True, exist_ok=True)
    mine = folder / f".{SELF_SIGNED_FILE}.{os.getpid()}"
    fd = os.open(mine, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    try:
        if path.is_file():
            os.replace(mine, path)  # an expired one: replaced
        else:
            os.link(mine, path)
    except FileExistsError:
        return path  # another worker's landed first
    finally:
        mine.unlink(missing_ok=True)
    log.info("generated a self-signed certificate for %s in %s", name, path)
    return path


def _expired(path: Path) -> bool:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return True
    return cert.not_valid_after_utc <= dt.datetime.now(dt.UTC)


def fingerprint(path: str | os.PathLike[str]) -> str:
    """SHA-256 of the first certificate in a PEM file, as colon-separated hex (what
    browsers and `openssl x509 -fingerprint -sha256` show)."""
    text = Path(path).read_text(encoding="ascii", errors="replace")
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    start = text.find(begin)
    stop = text.find(end, start)
    if start < 0 or stop < 0:
        raise CertificateError(f"{path}: no PEM certificate in it")
    der = ssl.PEM_cert_to_DER_cert(text[start : stop + len(end)])
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def client_id_of(server_name: str | None, ours: str) -> tuple[bool, str | None]:
    """(accepted, ClientID) for a handshake's TLS server name under our `server_name`.

    No server name (a client that connects by address), or no `server_name` configured:
    accepted, no ClientID. Our name: accepted, none. One label below it: that label.
    Anything else: refused (we do not serve that name).
    """
    if not server_name or not ours:
        return True, None
    name = server_name.lower().rstrip(".")
    if name == ours:
        return True, None
    label, dot, rest = name.partition(".")
    if dot and rest == ours and label:
        return True, label
    return False, None


class ServerTls:
    """The TLS contexts of the encrypted listeners (see the module's docstring).

    Raises `CertificateError` from the constructor when the certificate cannot be loaded,
    so a bad file stops the start with its name.
    """

    def __init__(self, config: TlsConfig) -> None:
        self.config = config
        self.contexts: dict[str, ssl.SSLContext] = {}
        self.refused_names = 0  # handshakes for a server name we do not serve
        self._files: tuple[tuple[str, int, int], ...] = ()
        self._built = 0.0
        self._logged: tuple[tuple[str, int, int], ...] | None = None  # files last logged
        self._build()

    def context(self, transport: str) -> ssl.SSLContext:
        """The context new `transport` ("tls" or "https") handshakes use now."""
        return self.contexts[transport]

    def reload(self, config: TlsConfig) -> bool:
        """Rebuild from `config` (SIGHUP: read the files again). False, with the error
        logged, when they cannot be loaded: the contexts in force stay."""
        old = self.config
        self.config = config
        try:
            self._build()
        except CertificateError as exc:
            log.error("TLS certificate not reloaded, keeping the previous one: %s", exc)
            self.config = old
            return False
        return True

    def poll(self) -> None:
        """Rebuild when the files changed on disk or the ticket key is due for rotation."""
        if self._stat() != self._files:
            log.info("TLS certificate files changed on disk: reloading them")
            self.reload(self.config)
        elif time.monotonic() - self._built >= self.config.ticket_rotation:
            self.reload(self.config)

    def cert_files(self) -> tuple[str, str]:
        """The PEM files of the certificate and key in force (one file, twice, for the
        self-signed one, generated if need be): for TLS stacks that load files
        themselves (QUIC)."""
        config = self.config
        if config.cert:
            return config.cert, config.key
        path = str(self_signed(Path(config.self_signed_dir), config.server_name))
        return path, path

    def _stat(self) -> tuple[tuple[str, int, int], ...]:
        out = []
        for path in dict.fromkeys(self.cert_files() if self.config.cert else ()):
            try:
                st = os.stat(path)
            except OSError:
                out.append((path, -1, -1))
            else:
                out.append((path, st.st_mtime_ns, st.st_size))
        return tuple(out)

    def _build(self) -> None:
        try:
            cert, key = self.cert_files()
        except OSError as exc:
            raise CertificateError(f"cannot write the self-signed certificate: {exc}") from None
        files = self._stat()
        contexts = {kind: self._context(cert, key, alpn) for kind, alpn in ALPN.items()}
        self.contexts = contexts
        self._files = files
        self._built = time.monotonic()
        if files != self._logged:
            self._logged = files
            kind = "self-signed certificate" if not self.config.cert else "certificate"
            log.info("TLS %s %s, SHA-256 fingerprint %s", kind, cert, fingerprint(cert))

    def _context(self, cert: str, key: str, alpn: tuple[str, ...]) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(cert, key)
        except FileNotFoundError as exc:
            raise CertificateError(f"{exc.filename}: no such file") from None
        except (ssl.SSLError, OSError) as exc:
            raise CertificateError(
                f"{cert} / {key}: not a usable PEM certificate and key ({exc})"
            ) from None
        ctx.set_alpn_protocols(list(alpn))
        ctx.sni_callback = self._server_name
        return ctx

    def _server_name(
        self, obj: ssl.SSLObject | ssl.SSLSocket, name: str | None, _ctx: ssl.SSLContext
    ) -> int | None:
        accepted, client_id = client_id_of(name, self.config.server_name)
        if not accepted:
            self.refused_names += 1
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        setattr(obj, CLIENT_ID_ATTRIBUTE, client_id)
        return None
