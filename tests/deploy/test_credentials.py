"""`fedshield certs`: a CA, the SuperLink's TLS certificate and SuperNode keys in the
formats Flower 1.42 reads; private keys 0600; nothing overwritten without --force."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import stat
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID
from flwr.cli.supernode.register import try_load_public_key

from tests.cli_runner import fedshield
from server.credentials import CredentialsError, ensure_credentials

PRIVATE = ["ca.key", "superlink.key", "superexec.secret", "nodes/client-0.key", "nodes/client-1.key"]


def certs(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return fedshield("certs", *args, cwd=cwd)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("certs") / "certs"
    result = certs("--out", str(out), "--clients", "2", "--san", "superlink", "--san", "10.1.2.3",
                   cwd=out.parent)
    assert result.returncode == 0, result.stderr
    return out


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_private_keys_are_readable_by_their_owner_only(made: Path):
    for name in PRIVATE:
        assert stat.S_IMODE((made / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    assert stat.S_IMODE((made / "nodes" / "client-0.pub").stat().st_mode) == 0o644


def test_superlink_certificate_is_issued_by_the_ca_for_its_names(made: Path):
    ca, server = load_cert(made / "ca.crt"), load_cert(made / "superlink.pem")
    server.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"localhost", "superlink"}
    assert set(sans.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.1.2.3")}
    usage = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_tls_handshake_succeeds_for_a_listed_name_only(made: Path):
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(made / "superlink.pem", made / "superlink.key")
    client_ctx = ssl.create_default_context(cafile=str(made / "ca.crt"))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        listener.settimeout(20)

        def serve(count: int) -> None:
            for _ in range(count):
                conn, _ = listener.accept()
                try:
                    with server_ctx.wrap_socket(conn, server_side=True):
                        pass
                except (ssl.SSLError, OSError):
                    pass

        thread = threading.Thread(target=serve, args=(2,), daemon=True)
        thread.start()
        with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
            with client_ctx.wrap_socket(raw, server_hostname="superlink") as tls:
                assert tls.version() in ("TLSv1.2", "TLSv1.3")
        with pytest.raises(ssl.SSLCertVerificationError):
            with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
                client_ctx.wrap_socket(raw, server_hostname="elsewhere.example")
        thread.join(timeout=20)


def test_node_keys_are_what_flower_reads(made: Path):
    key = load_ssh_private_key((made / "nodes" / "client-0.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    public = try_load_public_key(made / "nodes" / "client-0.pub")  # flwr supernode register
    assert public and (made / "nodes" / "client-0.pub").read_text().startswith(
        "ecdsa-sha2-nistp384 ")


def test_rerunning_keeps_every_key_and_adds_new_clients(made: Path):
    before = {name: (made / name).read_bytes() for name in PRIVATE}
    result = certs("--out", str(made), "--clients", "3", "--san", "superlink", "--san",
                   "10.1.2.3", cwd=made.parent)
    assert result.returncode == 0, result.stderr
    assert {name: (made / name).read_bytes() for name in PRIVATE} == before
    assert "created " + str(made / "nodes" / "client-2.key") in result.stderr
    assert "kept    " + str(made / "nodes" / "client-0.key") in result.stderr


def test_a_new_name_reissues_the_certificate_for_the_same_key(tmp_path: Path):
    ensure_credentials(tmp_path, sans=["superlink"])
    key = (tmp_path / "superlink.key").read_bytes()
    report = ensure_credentials(tmp_path, sans=["superlink", "fl.example.org"])
    assert (tmp_path / "superlink.key").read_bytes() == key
    assert tmp_path / "superlink.pem" in report.created
    sans = load_cert(tmp_path / "superlink.pem").extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert "fl.example.org" in sans.get_values_for_type(x509.DNSName)


def test_force_replaces_keys(tmp_path: Path):
    ensure_credentials(tmp_path, ["a"])
    old = (tmp_path / "nodes" / "a.key").read_bytes()
    ensure_credentials(tmp_path, ["a"], force=True)
    assert (tmp_path / "nodes" / "a.key").read_bytes() != old
    assert stat.S_IMODE((tmp_path / "nodes" / "a.key").stat().st_mode) == 0o600


def test_nodes_only_makes_no_ca(tmp_path: Path):
    ensure_credentials(tmp_path, ["hospital-3"], nodes_only=True)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [
        "hospital-3.key", "hospital-3.pub"]


def test_a_ca_without_its_key_cannot_issue(tmp_path: Path):
    ensure_credentials(tmp_path)
    (tmp_path / "ca.key").unlink()
    (tmp_path / "superlink.key").unlink()
    with pytest.raises(CredentialsError, match="signing key"):
        ensure_credentials(tmp_path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--san", "not a host!"], "--san 'not a host!' is neither an IP address nor a DNS host name"),
        (["--name", "../escape"], "client name '../escape' must be"),
        (["--nodes-only"], "--nodes-only needs --clients N or --name NAME"),
        (["--clients", "-1"], "--clients must be >= 0"),
        (["--days", "0"], "--days must be >= 1"),
    ],
)
def test_bad_input_is_a_one_line_error(args: list[str], message: str, tmp_path: Path):
    result = certs("--out", str(tmp_path / "c"), *args, cwd=tmp_path)
    assert result.returncode == 2
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "c" / "ca.key").exists()
