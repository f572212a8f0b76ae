"""Credentials of a deployed federation: a CA, the SuperLink's TLS certificate, node keys.

Flower's Deployment Engine (1.42) secures the federation with two independent layers:

* **TLS** on every connection to the SuperLink (SuperNodes, the SuperExec running the
  ServerApp, the ``flwr`` CLI). The SuperLink presents a certificate issued by the
  federation's own CA; every peer verifies it against ``ca.crt``
  (``--root-certificates``). Flower has no client certificates (no mutual TLS).
* **SuperNode authentication**: each SuperNode holds an EC key pair on a NIST curve in
  OpenSSH format (``flower-supernode --auth-supernode-private-key``) and signs a timestamp
  on every Fleet API request; a SuperLink started with ``--enable-supernode-auth`` only
  accepts public keys registered with ``flwr supernode register <key>.pub``.

Everything here is made with ``cryptography``: ECDSA P-384 keys (Flower's own default
curve for node keys), SHA-384 signatures, X.509 v3 extensions set explicitly. Private keys
are written with mode 0600 and an existing key is never replaced unless ``force`` is set.

Layout written by :func:`ensure_credentials` under ``out_dir``::

    ca.crt              the federation's root certificate: give it to every party
    ca.key              the CA's signing key (0600): keep it offline
    superlink.pem       the SuperLink's certificate (SANs: localhost, 127.0.0.1, extras)
    superlink.key       its private key (0600)
    superexec.secret    shared secret of the SuperLink and the SuperExec running the
                        ServerApp (``--superexec-auth-secret-file``; 0600)
    nodes/<name>.key    a SuperNode's authentication key (0600, OpenSSH ECDSA P-384)
    nodes/<name>.pub    its public key, to register with ``flwr supernode register``
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CredentialsError",
    "CredentialsReport",
    "DEFAULT_SANS",
    "certificate_names",
    "create_ca",
    "ensure_credentials",
    "generate_node_key",
    "issue_server_certificate",
    "node_public_key_line",
    "parse_san",
    "write_private_file",
]

DEFAULT_SANS: tuple[str, ...] = ("localhost", "127.0.0.1")
CA_DAYS = 3650
KEY_CURVE = ec.SECP384R1()
_SIGNATURE_HASH = hashes.SHA384()
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


class CredentialsError(ValueError):
    """Bad input or an inconsistent credentials folder; the message names the problem."""


@dataclass
class CredentialsReport:
    """Which files were created and which existing ones were kept."""

    created: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)


def parse_san(name: str) -> x509.GeneralName:
    """A subject alternative name: an IP address, else a DNS host name."""
    text = name.strip()
    try:
        return x509.IPAddress(ipaddress.ip_address(text))
    except ValueError:
        pass
    if not _HOSTNAME.match(text):
        raise CredentialsError(f"--san {name!r} is neither an IP address nor a DNS host name")
    return x509.DNSName(text.lower())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def create_ca(
    common_name: str = "fedshield federation CA", days: int = CA_DAYS
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed root CA that may only sign end-entity certificates (path length 0)."""
    key = ec.generate_private_key(KEY_CURVE)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = _now() - dt.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, _SIGNATURE_HASH)
    )
    return key, cert


def issue_server_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    sans: Sequence[str],
    days: int = 825,
    key: ec.EllipticCurvePrivateKey | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A TLS server certificate for the SuperLink, valid for every name in ``sans``.

    ``key``: certify an existing key (re-issuing for new names); a new one by default.
    """
    if not sans:
        raise CredentialsError("the SuperLink certificate needs at least one --san")
    if days < 1:
        raise CredentialsError(f"--days must be >= 1, got {days}")
    names = [parse_san(s) for s in dict.fromkeys(sans)]
    key = key or ec.generate_private_key(KEY_CURVE)
    start = _now() - dt.timedelta(minutes=5)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, sans[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(min(start + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), False
        )
        .sign(ca_key, _SIGNATURE_HASH)
    )
    return key, cert


def generate_node_key() -> ec.EllipticCurvePrivateKey:
    """A SuperNode authentication key: ECDSA on NIST P-384, as Flower generates itself."""
    return ec.generate_private_key(KEY_CURVE)


def node_public_key_line(key: ec.EllipticCurvePrivateKey, comment: str) -> bytes:
    """The OpenSSH public key line that ``flwr supernode register`` reads."""
    line = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return line + b" " + comment.encode("ascii") + b"\n"


def _pem_private(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _ssh_private(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def write_private_file(path: Path, data: bytes, force: bool = False) -> None:
    """Write a secret readable by its owner only (mode 0600 from creation on).

    An existing file is never replaced unless ``force``; with ``force`` the new content
    goes to a fresh 0600 file that then atomically takes the old one's place.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    target = path.with_name(f".{path.name}.tmp") if force else path
    if force:
        target.unlink(missing_ok=True)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CredentialsError(f"'{path}' exists; pass --force to replace it") from None
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(data)
    if force:
        os.replace(target, path)


def _write_public_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise CredentialsError(
            f"client name {name!r} must be 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def _load_ca(out: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    cert_path, key_path = out / "ca.crt", out / "ca.key"
    if not key_path.is_file():
        raise CredentialsError(
            f"'{cert_path}' exists but its signing key '{key_path}' does not: put the CA "
            "key back to issue certificates, or pass --force to start a new CA"
        )
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except ValueError as err:
        raise CredentialsError(f"cannot read the CA in '{out}': {err}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or (
        key.public_key().public_numbers() != cert.public_key().public_numbers()
    ):
        raise CredentialsError(f"'{key_path}' is not the key of '{cert_path}'")
    return key, cert


def _ensure_ca(
    out: Path, force: bool, report: CredentialsReport
) -> tuple[tuple[ec.EllipticCurvePrivateKey, x509.Certificate], bool]:
    cert_path, key_path = out / "ca.crt", out / "ca.key"
    if cert_path.exists() and not force:
        ca = _load_ca(out)
        report.kept += [cert_path, key_path]
        return ca, False
    if key_path.exists() and not force:
        raise CredentialsError(f"'{key_path}' exists without ca.crt; pass --force to replace it")
    key, cert = create_ca()
    write_private_file(key_path, _pem_private(key), force=force)
    _write_public_file(cert_path, _cert_pem(cert))
    report.created += [cert_path, key_path]
    return (key, cert), True


def certificate_names(cert: x509.Certificate) -> set[str]:
    """The DNS names and IP addresses a certificate is valid for."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(v) for v in san.get_values_for_type(x509.DNSName)} | {
        str(v) for v in san.get_values_for_type(x509.IPAddress)
    }


def _ensure_server(
    out: Path,
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
    sans: Sequence[str],
    days: int,
    force: bool,
    new_ca: bool,
    report: CredentialsReport,
) -> None:
    cert_path, key_path = out / "superlink.pem", out / "superlink.key"
    if force or not key_path.exists():
        if cert_path.exists() and not force:
            raise CredentialsError(f"'{cert_path}' exists without its key; pass --force")
        key, cert = issue_server_certificate(*ca, sans=sans, days=days)
        write_private_file(key_path, _pem_private(key), force=force)
        _write_public_file(cert_path, _cert_pem(cert))
        report.created += [cert_path, key_path]
        return
    if new_ca:
        raise CredentialsError(
            f"'{key_path}' exists but the CA that certified it is gone; pass --force to "
            "start over"
        )
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CredentialsError(f"'{key_path}' is not an EC private key")
    report.kept.append(key_path)
    wanted = {str(parse_san(s).value) for s in sans}
    if cert_path.exists():
        current = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if wanted <= certificate_names(current) and (
            current.public_key().public_numbers() == key.public_key().public_numbers()
        ):
            report.kept.append(cert_path)
            return
    # A certificate is public: re-issue it for the kept key (new names), keys stay as they are.
    _, cert = issue_server_certificate(*ca, sans=sans, days=days, key=key)
    _write_public_file(cert_path, _cert_pem(cert))
    report.created.append(cert_path)


def _ensure_secret(path: Path, force: bool, report: CredentialsReport) -> None:
    """256 random bits, hex-encoded (Flower reads the file's exact bytes)."""
    if path.exists() and not force:
        report.kept.append(path)
        return
    write_private_file(path, secrets.token_hex(32).encode("ascii"), force=force)
    report.created.append(path)


def _ensure_node(out: Path, name: str, force: bool, report: CredentialsReport) -> None:
    key_path = out / "nodes" / f"{name}.key"
    pub_path = out / "nodes" / f"{name}.pub"
    if key_path.exists() and not force:
        report.kept.append(key_path)
        if not pub_path.exists():  # derive it again: no secret changes
            key = serialization.load_ssh_private_key(key_path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise CredentialsError(f"'{key_path}' is not an EC key")
            _write_public_file(pub_path, node_public_key_line(key, name))
            report.created.append(pub_path)
        else:
            report.kept.append(pub_path)
        return
    key = generate_node_key()
    write_private_file(key_path, _ssh_private(key), force=force)
    _write_public_file(pub_path, node_public_key_line(key, name))
    report.created += [key_path, pub_path]


def ensure_credentials(
    out_dir: str | Path,
    clients: Iterable[str] = (),
    sans: Sequence[str] = (),
    days: int = 825,
    force: bool = False,
    nodes_only: bool = False,
) -> CredentialsReport:
    """Create what is missing under ``out_dir`` (layout in the module docstring).

    Existing files are kept (and reported) unless ``force``: re-running adds new clients
    without touching enrolled ones. ``nodes_only`` writes node keys and nothing else: an
    institution generating its own key, whose private half never leaves its premises.
    """
    if days < 1:
        raise CredentialsError(f"--days must be >= 1, got {days}")
    names = [_check_name(n) for n in clients]
    if len(set(names)) != len(names):
        raise CredentialsError(f"client names must be unique, got {', '.join(names)}")
    all_sans = list(dict.fromkeys([*DEFAULT_SANS, *sans]))
    for san in all_sans:
        parse_san(san)  # validate every name before writing anything
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    report = CredentialsReport()
    if not nodes_only:
        ca, new_ca = _ensure_ca(out, force, report)
        _ensure_server(out, ca, all_sans, days, force, new_ca, report)
        _ensure_secret(out / "superexec.secret", force, report)
    if names:
        (out / "nodes").mkdir(exist_ok=True)
        os.chmod(out / "nodes", 0o700)
    for name in names:
        _ensure_node(out, name, force, report)
    return report
