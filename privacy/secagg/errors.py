"""Exceptions raised by the SecAgg+ protocol core.

Every error derives from :class:`SecAggError` so the Flower glue can catch the whole family
with one ``except``. The three concrete kinds answer three different questions:

* :class:`SecAggAbort` -- *too few parties are left*: the protocol cannot continue without
  breaking its privacy or correctness guarantee (fewer than ``t`` survivors somewhere).
* :class:`SecAggTamperError` -- *a message failed authentication*: a share ciphertext was
  modified, replayed from another round/run, or addressed to another client.
* :class:`SecAggProtocolError` -- *a party broke the protocol*: out-of-order stages,
  malformed or inconsistent messages, a request to reveal both secrets of one client.
* :class:`SecAggConfigError` -- *a parameter is out of range*; also a :class:`ValueError`.
"""

from __future__ import annotations

__all__ = [
    "SecAggError",
    "SecAggAbort",
    "SecAggTamperError",
    "SecAggProtocolError",
    "SecAggConfigError",
]


class SecAggError(Exception):
    """Base class of every secure-aggregation error."""


class SecAggAbort(SecAggError):
    """Fewer than ``threshold`` parties survive at ``stage``; the round must be abandoned.

    Attributes:
        stage: protocol stage at which the survivors were counted.
        survivors: number of surviving parties that were counted.
        threshold: the Shamir threshold ``t`` that had to be met.
        client_id: the client whose neighbourhood fell short, or ``None`` when the count is
            over the whole cohort.
    """

    def __init__(
        self, stage: str, survivors: int, threshold: int, client_id: int | None = None
    ) -> None:
        self.stage = stage
        self.survivors = survivors
        self.threshold = threshold
        self.client_id = client_id
        where = (
            "in the cohort" if client_id is None else f"in the neighbourhood of client {client_id}"
        )
        super().__init__(
            f"secure aggregation aborted at stage '{stage}': {survivors} surviving "
            f"client(s) {where}, fewer than the threshold t={threshold}"
        )


class SecAggTamperError(SecAggError):
    """A share ciphertext from ``sender`` failed authentication (tampered, replayed or
    misaddressed).

    Attributes:
        sender: id of the client the ciphertext claims to come from.
    """

    def __init__(self, sender: int, detail: str) -> None:
        self.sender = sender
        super().__init__(f"share ciphertext from client {sender} rejected: {detail}")


class SecAggProtocolError(SecAggError):
    """A message is malformed, out of order or violates a protocol invariant."""


class SecAggConfigError(SecAggError, ValueError):
    """A configuration value is outside its allowed range."""
