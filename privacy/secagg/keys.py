"""Key material: X25519 key pairs, key agreement and HKDF-SHA256 key derivation.

Every symmetric key in the protocol is derived as

    K = HKDF-SHA256(IKM, salt=None, info = label || ctx, L = 32 bytes)

(RFC 5869) where ``label`` names the *use* of the key (one label per use, so a key derived
for one purpose is never valid for another) and ``ctx`` binds it to the run id, the round
id and the client ids involved. ``IKM`` is either an X25519 shared secret (RFC 7748) or a
random 32-byte seed. Binding the round and the run means that the same pair of clients
gets unrelated keys in every round and run, even if a key pair were ever reused.

Randomness comes only from an injectable ``rng: Callable[[int], bytes]`` that defaults to
:func:`os.urandom`; tests pass a deterministic stream.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from privacy.secagg.errors import SecAggConfigError, SecAggProtocolError

__all__ = [
    "Rng",
    "KEY_BYTES",
    "LABEL_SHARE_ENCRYPTION",
    "LABEL_PAIRWISE_MASK",
    "LABEL_SELF_MASK",
    "LABEL_NEIGHBOUR_GRAPH",
    "LABEL_SHARE_AD",
    "random_bytes",
    "new_private_key",
    "private_key_from_bytes",
    "public_key_bytes",
    "agree",
    "derive_key",
    "encode_context",
]

Rng = Callable[[int], bytes]
"""A source of random bytes: ``rng(n)`` returns ``n`` uniformly random bytes."""

KEY_BYTES = 32
"""Length of every private key, public key, seed and derived symmetric key (256 bits)."""

LABEL_SHARE_ENCRYPTION = b"fedshield/secagg/v1/share-encryption-key"
LABEL_PAIRWISE_MASK = b"fedshield/secagg/v1/pairwise-mask-key"
LABEL_SELF_MASK = b"fedshield/secagg/v1/self-mask-key"
LABEL_NEIGHBOUR_GRAPH = b"fedshield/secagg/v1/neighbour-graph-key"
LABEL_SHARE_AD = b"fedshield/secagg/v1/share-ciphertext"

_U64_MAX = (1 << 64) - 1


def random_bytes(rng: Rng, n: int) -> bytes:
    """``rng(n)``, checked to be exactly ``n`` bytes."""
    out = rng(n)
    if not isinstance(out, (bytes, bytearray)) or len(out) != n:
        raise SecAggConfigError(f"rng({n}) must return exactly {n} bytes")
    return bytes(out)


def new_private_key(rng: Rng = os.urandom) -> bytes:
    """The 32 raw bytes of a fresh X25519 private key, from ``rng``.

    The scalar is clamped by X25519 itself (RFC 7748 section 5), so any 32 bytes are valid.
    """
    return random_bytes(rng, KEY_BYTES)


def private_key_from_bytes(raw: bytes) -> X25519PrivateKey:
    """Rebuild an X25519 private key from its 32 raw bytes."""
    return X25519PrivateKey.from_private_bytes(raw)


def public_key_bytes(key: X25519PrivateKey | X25519PublicKey) -> bytes:
    """The 32 raw bytes of the public key of ``key`` (or of ``key`` if it is public)."""
    if isinstance(key, X25519PrivateKey):
        key = key.public_key()
    return key.public_bytes_raw()


def agree(private_key: X25519PrivateKey, peer_public: bytes, peer_id: int) -> bytes:
    """X25519 shared secret between ``private_key`` and the raw public key of ``peer_id``.

    Raises:
        SecAggProtocolError: the peer's public key is malformed or of small order (the
            shared secret would be all zeros; OpenSSL refuses it).
    """
    try:
        return private_key.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:
        raise SecAggProtocolError(f"invalid X25519 public key of client {peer_id}: {exc}") from exc


def encode_context(run_id: str, round_id: int, *ids: int) -> bytes:
    """Unambiguous encoding of ``(run_id, round_id, ids...)``.

    ``len(run_id) (u32) || run_id (UTF-8) || round_id (u64) || n (u32) || ids (u64 each)``,
    all big-endian, so distinct tuples always encode to distinct byte strings.
    """
    if not 0 <= round_id <= _U64_MAX:
        raise SecAggConfigError(f"round_id must be in [0, 2**64 - 1], got {round_id}")
    run = run_id.encode("utf-8")
    parts = [struct.pack(">I", len(run)), run, struct.pack(">QI", round_id, len(ids))]
    for i in ids:
        if not 0 <= i <= _U64_MAX:
            raise SecAggConfigError(f"client ids must be in [0, 2**64 - 1], got {i}")
        parts.append(struct.pack(">Q", i))
    return b"".join(parts)


def derive_key(ikm: bytes, label: bytes, run_id: str, round_id: int, *ids: int) -> bytes:
    """``HKDF-SHA256(ikm, info = len(label) || label || encode_context(...))``, 32 bytes."""
    info = struct.pack(">I", len(label)) + label + encode_context(run_id, round_id, *ids)
    return HKDF(algorithm=SHA256(), length=KEY_BYTES, salt=None, info=info).derive(ikm)
