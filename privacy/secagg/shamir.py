"""Shamir secret sharing of 32-byte secrets over the prime field GF(2^521 - 1).

Shamir, "How to Share a Secret", CACM 1979. To share a secret ``s < 2^256`` with threshold
``t`` the dealer draws ``a_1..a_{t-1}`` uniformly from ``GF(p)``, ``p = 2^521 - 1`` (a
Mersenne prime, so every 32-byte secret is a field element), and hands party ``x`` the
point ``(x, f(x))`` with ``f(X) = s + a_1 X + ... + a_{t-1} X^{t-1}``. Any ``t`` points
determine ``f`` and give back ``s = f(0)`` by Lagrange interpolation at zero,

    s = sum_i y_i * prod_{j != i} x_j / (x_j - x_i)     (mod p),

while any ``t - 1`` points are independent of ``s`` (information-theoretic secrecy).

In SecAgg the evaluation point of client ``id`` is ``x = id + 1`` (never zero, distinct for
distinct ids; ids are below 2^64 < p).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from privacy.secagg.errors import SecAggConfigError, SecAggProtocolError
from privacy.secagg.keys import Rng, random_bytes

__all__ = [
    "PRIME",
    "SHARE_BYTES",
    "SECRET_BYTES",
    "share_x",
    "split_secret",
    "reconstruct_secret",
    "encode_share",
    "decode_share",
]

PRIME = (1 << 521) - 1
"""The field modulus ``p = 2^521 - 1``."""

SHARE_BYTES = 66
"""A field element encoded big-endian in ``ceil(521 / 8) = 66`` bytes."""

SECRET_BYTES = 32
"""Secrets are 32 bytes (a self-mask seed or an X25519 private key)."""

_FIELD_BITS = 521


def share_x(client_id: int) -> int:
    """Evaluation point of the share held by ``client_id``: ``client_id + 1``."""
    return client_id + 1


def _random_field_element(rng: Rng) -> int:
    # Rejection sampling from 521-bit integers: uniform over [0, p), no bias.
    while True:
        value = int.from_bytes(random_bytes(rng, SHARE_BYTES), "big") & ((1 << _FIELD_BITS) - 1)
        if value < PRIME:
            return value


def split_secret(
    secret: bytes, xs: Sequence[int], threshold: int, rng: Rng = os.urandom
) -> list[int]:
    """Shamir-share ``secret`` (``SECRET_BYTES`` bytes) at the points ``xs``.

    Returns ``f(x)`` for each ``x`` in ``xs``, in order. Coefficients come from ``rng``.
    """
    if len(secret) != SECRET_BYTES:
        raise SecAggConfigError(f"secret must be {SECRET_BYTES} bytes, got {len(secret)}")
    if not 1 <= threshold <= len(xs):
        raise SecAggConfigError(
            f"threshold must be in [1, {len(xs)}] (number of shares), got {threshold}"
        )
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise SecAggConfigError("share points must be distinct and in [1, p - 1]")
    coefficients = [int.from_bytes(secret, "big")]
    coefficients += [_random_field_element(rng) for _ in range(threshold - 1)]
    shares = []
    for x in xs:
        acc = 0
        for c in reversed(coefficients):  # Horner's rule
            acc = (acc * x + c) % PRIME
        shares.append(acc)
    return shares


def reconstruct_secret(points: Sequence[tuple[int, int]], threshold: int) -> bytes:
    """Recover the secret from at least ``threshold`` points ``(x, y)``.

    Interpolates at zero with the first ``threshold`` points after sorting by ``x`` (one
    modular inversion per point, Python big ints). Raises :class:`SecAggProtocolError` if
    there are too few points, repeated ``x`` values, or the result is not a 32-byte secret
    (a sign of inconsistent shares).
    """
    xs = [x for x, _ in points]
    if len(set(xs)) != len(xs):
        raise SecAggProtocolError("repeated share points in reconstruction")
    if len(points) < threshold:
        raise SecAggProtocolError(
            f"{len(points)} shares are not enough to reconstruct (threshold {threshold})"
        )
    chosen = sorted(points)[:threshold]
    secret = 0
    for i, (xi, yi) in enumerate(chosen):
        num, den = 1, 1
        for j, (xj, _) in enumerate(chosen):
            if j != i:
                num = num * xj % PRIME
                den = den * (xj - xi) % PRIME
        secret = (secret + yi * num * pow(den, -1, PRIME)) % PRIME
    if secret >= 1 << (8 * SECRET_BYTES):
        raise SecAggProtocolError("shares are inconsistent: reconstruction out of range")
    return secret.to_bytes(SECRET_BYTES, "big")


def encode_share(y: int) -> bytes:
    """Encode a field element as ``SHARE_BYTES`` big-endian bytes."""
    return y.to_bytes(SHARE_BYTES, "big")


def decode_share(raw: bytes) -> int:
    """Inverse of :func:`encode_share`; rejects wrong lengths and values ``>= p``."""
    if len(raw) != SHARE_BYTES:
        raise SecAggProtocolError(f"a share must be {SHARE_BYTES} bytes, got {len(raw)}")
    y = int.from_bytes(raw, "big")
    if y >= PRIME:
        raise SecAggProtocolError("share value is not a field element")
    return y
