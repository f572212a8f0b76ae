"""Authenticated encryption of Shamir shares between two clients, relayed by the server.

As in Bonawitz et al. (CCS 2017, round "ShareKeys"), client ``u`` sends the shares meant
for ``v`` through the server, encrypted under a key only ``u`` and ``v`` can compute:

    K_{u->v} = HKDF(X25519(c_u^SK, c_v^PK), "share-encryption-key", run, round, u, v)
    ct       = AES-256-GCM(K_{u->v}, nonce, pt, AD)
    pt       = version || u || v || share of b_u || share of s_u^SK      (149 bytes)
    AD       = "share-ciphertext" || run || round || u || v || "share_secrets"

The key is directional (``u -> v`` and ``v -> u`` differ) and used for one message only;
both come from one X25519 agreement (:func:`share_channel_keys`), so a client derives the
key to open its neighbour's shares when it encrypts its own, one agreement per neighbour;
the 96-bit nonce is fresh from the rng anyway. The associated data and the plaintext header
bind sender, receiver, run, round and stage, so a ciphertext with a flipped bit, replayed
from another round or run, or delivered to another client fails to authenticate and is
rejected with :class:`~privacy.secagg.errors.SecAggTamperError` naming the sender.
"""

from __future__ import annotations

import hmac
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from privacy.secagg.errors import SecAggTamperError
from privacy.secagg.keys import (
    LABEL_SHARE_AD,
    LABEL_SHARE_ENCRYPTION,
    Rng,
    agree,
    derive_key,
    encode_context,
    random_bytes,
)
from privacy.secagg.messages import EncryptedShare, Stage
from privacy.secagg.shamir import SHARE_BYTES, decode_share, encode_share

__all__ = ["NONCE_BYTES", "share_channel_keys", "encrypt_shares", "decrypt_shares"]

NONCE_BYTES = 12
_VERSION = 1
_HEADER = struct.Struct(">BQQ")
_PLAINTEXT_BYTES = _HEADER.size + 2 * SHARE_BYTES


def share_channel_keys(
    private_key: X25519PrivateKey,
    peer_public_key: bytes,
    *,
    run_id: str,
    round_id: int,
    client_id: int,
    peer_id: int,
) -> tuple[bytes, bytes]:
    """The AES-256-GCM keys ``(K_{client->peer}, K_{peer->client})`` from one agreement.

    ``private_key`` is ``client_id``'s share private key and ``peer_public_key`` the share
    public key of ``peer_id``; the peer computes the same two keys the other way round.
    """
    shared = agree(private_key, peer_public_key, peer_id)
    return (
        derive_key(shared, LABEL_SHARE_ENCRYPTION, run_id, round_id, client_id, peer_id),
        derive_key(shared, LABEL_SHARE_ENCRYPTION, run_id, round_id, peer_id, client_id),
    )


def _associated_data(run_id: str, round_id: int, sender: int, recipient: int) -> bytes:
    return (
        LABEL_SHARE_AD
        + encode_context(run_id, round_id, sender, recipient)
        + Stage.SHARE_SECRETS.encode()
    )


def encrypt_shares(
    *,
    key: bytes,
    run_id: str,
    round_id: int,
    sender: int,
    recipient: int,
    seed_share: int,
    key_share: int,
    rng: Rng = os.urandom,
) -> EncryptedShare:
    """Encrypt ``sender``'s two shares for ``recipient``."""
    plaintext = (
        _HEADER.pack(_VERSION, sender, recipient)
        + encode_share(seed_share)
        + encode_share(key_share)
    )
    nonce = random_bytes(rng, NONCE_BYTES)
    ciphertext = AESGCM(key).encrypt(
        nonce, plaintext, _associated_data(run_id, round_id, sender, recipient)
    )
    return EncryptedShare(sender, recipient, nonce, ciphertext)


def decrypt_shares(
    share: EncryptedShare,
    *,
    key: bytes,
    run_id: str,
    round_id: int,
    recipient: int,
) -> tuple[int, int]:
    """Authenticate and decrypt a ciphertext for ``recipient``; return
    ``(seed_share, key_share)``.

    Raises:
        SecAggTamperError: naming ``share.sender``, if the ciphertext is addressed to
            another client, fails AES-GCM authentication (modified, replayed from another
            round or run, or encrypted for someone else), or has a wrong header.
    """
    sender = share.sender
    if share.recipient != recipient:
        raise SecAggTamperError(
            sender, f"addressed to client {share.recipient}, delivered to client {recipient}"
        )
    if len(share.nonce) != NONCE_BYTES:
        raise SecAggTamperError(sender, f"nonce must be {NONCE_BYTES} bytes")
    try:
        plaintext = AESGCM(key).decrypt(
            share.nonce,
            share.ciphertext,
            _associated_data(run_id, round_id, sender, recipient),
        )
    except InvalidTag:
        raise SecAggTamperError(
            sender,
            f"AES-GCM authentication failed for client {recipient} in run "
            f"{run_id!r}, round {round_id} (modified, replayed or misaddressed)",
        ) from None
    expected_header = _HEADER.pack(_VERSION, sender, recipient)
    if len(plaintext) != _PLAINTEXT_BYTES or not hmac.compare_digest(
        plaintext[: _HEADER.size], expected_header
    ):
        raise SecAggTamperError(sender, "decrypted header does not match sender/recipient")
    body = plaintext[_HEADER.size :]
    return decode_share(body[:SHARE_BYTES]), decode_share(body[SHARE_BYTES:])
