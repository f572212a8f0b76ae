"""Client signing keys: Ed25519 from ``cryptography``, kept on the client.

Each client signs its own ledger entries with an Ed25519 private key (RFC 8032) that
never leaves the client. The key lives in a PEM file (PKCS#8, optionally encrypted with
a passphrase) that is created with mode 0600 and is never overwritten: creating a key
where a file already exists raises ``FileExistsError``. The ledger refers to a key by
its *key id*: the hex SHA-256 of the 32-byte raw public key.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from .errors import LedgerError

KEY_FILE_MODE = 0o600


@runtime_checkable
class Signer(Protocol):
    """Anything that can sign ledger entries for one client (a key file, an HSM, ...)."""

    @property
    def public_key_id(self) -> str: ...

    def sign(self, message: bytes) -> bytes: ...


def load_public_key(key: Ed25519PublicKey | bytes) -> Ed25519PublicKey:
    """An Ed25519 public key object from an object or its 32 raw bytes."""
    if isinstance(key, Ed25519PublicKey):
        return key
    if isinstance(key, (bytes, bytearray)) and len(key) == 32:
        return Ed25519PublicKey.from_public_bytes(bytes(key))
    raise LedgerError("public key must be an Ed25519PublicKey or its 32 raw bytes")


def raw_public_key(key: Ed25519PublicKey | bytes) -> bytes:
    """The 32 raw bytes of an Ed25519 public key."""
    return load_public_key(key).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def public_key_id(key: Ed25519PublicKey | bytes) -> str:
    """Key id: hex SHA-256 of the 32-byte raw public key (64 hex characters)."""
    return hashlib.sha256(raw_public_key(key)).hexdigest()


def verify_signature(key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    """True if ``signature`` is a valid Ed25519 signature of ``message`` under ``key``."""
    try:
        key.verify(signature, message)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


class ClientSigner:
    """A client's Ed25519 signing key.

    Use :meth:`load_or_create` on the client with a path on its private volume; give
    :attr:`public_key` to the ledger's ``enroll`` once, and the signer to ``append``.
    """

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        if not isinstance(private_key, Ed25519PrivateKey):
            raise LedgerError("ClientSigner needs an Ed25519PrivateKey")
        self._private_key = private_key
        self._public_key = private_key.public_key()
        self._public_key_id = public_key_id(self._public_key)

    @classmethod
    def generate(cls) -> "ClientSigner":
        """A fresh in-memory key (nothing is written; for tests and ephemeral clients)."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def create(cls, path: str | os.PathLike[str], *, passphrase: bytes | None = None) -> "ClientSigner":
        """Generate a key and write it to ``path`` (mode 0600).

        Raises ``FileExistsError`` if ``path`` exists: an existing key is never replaced.
        The file appears atomically (written to a temporary file, fsynced, then
        hard-linked into place), so a concurrent :meth:`load` never sees half a key.
        """
        signer = cls.generate()
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase)
            if passphrase
            else serialization.NoEncryption()
        )
        pem = signer._private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
        _write_new_private_file(Path(path), pem)
        return signer

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, passphrase: bytes | None = None) -> "ClientSigner":
        """Load an existing key file.

        Refuses (``LedgerError``) a key file that group or others may access, as ssh does,
        and a file that does not hold an Ed25519 private key.
        """
        path = Path(path)
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if os.name == "posix" and mode & 0o077:
            raise LedgerError(
                f"key file {path} has mode {mode:04o}; it must not be accessible by group or "
                f"others (chmod 600 {path})"
            )
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=passphrase)
        except (ValueError, TypeError) as exc:
            raise LedgerError(f"cannot load the private key in {path}: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise LedgerError(f"{path} does not hold an Ed25519 private key")
        return cls(key)

    @classmethod
    def load_or_create(
        cls, path: str | os.PathLike[str], *, passphrase: bytes | None = None
    ) -> "ClientSigner":
        """Load the key at ``path``, creating it first if (and only if) it is absent."""
        try:
            return cls.create(path, passphrase=passphrase)
        except FileExistsError:
            return cls.load(path, passphrase=passphrase)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._public_key

    @property
    def public_key_bytes(self) -> bytes:
        return raw_public_key(self._public_key)

    @property
    def public_key_id(self) -> str:
        """Hex SHA-256 of the raw public key."""
        return self._public_key_id

    def sign(self, message: bytes) -> bytes:
        """Ed25519 signature (64 bytes) of ``message``."""
        return self._private_key.sign(message)

    def __repr__(self) -> str:
        return f"ClientSigner(public_key_id={self._public_key_id[:16]}...)"


def _write_new_private_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists() or path.is_symlink():
        raise FileExistsError(f"{path} exists; refusing to overwrite a key file")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
    try:
        try:
            os.fchmod(fd, KEY_FILE_MODE)  # the umask cannot widen it, but be explicit
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        # link() fails with FileExistsError if another process created `path` meanwhile,
        # unlike rename(), which would silently replace it.
        os.link(tmp, path)
    finally:
        os.unlink(tmp)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
