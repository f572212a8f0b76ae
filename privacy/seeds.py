"""Seeds nobody can predict, for the DP-SGD sample and noise generators.

A generator seeded from a public value (a round number, a client id) would let anyone
replay the Poisson sample and the noise, and so subtract the noise from a released update.
"""

from __future__ import annotations

import os


def unpredictable_seed() -> int:
    """A 63-bit seed from the operating system's CSPRNG."""
    return int.from_bytes(os.urandom(8), "little") >> 1
