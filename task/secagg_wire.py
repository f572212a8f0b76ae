"""How the SecAgg+ stages travel as Flower messages; shared by the client and the server.

Each stage is one Message round of type ``train.<action>`` (Flower routes it to the
ClientApp function registered with ``@app.train("<action>")``). A stage message maps onto
a ``RecordDict``: its fields go into the ``ConfigRecord`` ``"secagg"``, the one array (the
masked input, elements of ``Z_{2^b}``) as its raw little-endian ``uint64`` bytes. Raw bytes,
not an ``ArrayRecord``: an ``Array`` is a ``.npy`` file in memory, and writing and parsing
that for 500 KB took about 0.5 ms at each end, per client and round, on the server's one
thread for every client of the cohort.

=====================  ==============================  ===============================
action                 server -> client                 client -> server
=====================  ==============================  ===============================
secagg_setup           SetupMessage                     PublicKeys
secagg_share_secrets   NeighbourKeys                    EncryptedShares
secagg_masked_input    model, config, ForwardedShares   status, public metrics, MaskedInput
secagg_unmask          UnmaskRequest                    UnmaskResponse
=====================  ==============================  ===============================

The protocol's client ids are small integers (the client's position in the sorted cohort,
sent in ``"secagg-recipient"``), because Flower node ids are unsigned 64-bit and
``ConfigRecord`` integers are signed 64-bit.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import numpy as np
from flwr.app import ConfigRecord, MessageType, RecordDict

from privacy.secagg import SecAggProtocolError, Stage

__all__ = [
    "SETUP",
    "SHARE_SECRETS",
    "MASKED_INPUT",
    "UNMASK",
    "STAGE_OF_ACTION",
    "PROTOCOL_KEY",
    "RECIPIENT_KEY",
    "message_type",
    "to_records",
    "from_records",
]

SETUP = "secagg_setup"
SHARE_SECRETS = "secagg_share_secrets"
MASKED_INPUT = "secagg_masked_input"
UNMASK = "secagg_unmask"

# The protocol stage a client completes by answering each action.
STAGE_OF_ACTION = {
    SETUP: Stage.SHARE_KEYS,
    SHARE_SECRETS: Stage.SHARE_SECRETS,
    MASKED_INPUT: Stage.COLLECT_MASKED_INPUT,
    UNMASK: Stage.UNMASK,
}

PROTOCOL_KEY = "secagg"
RECIPIENT_KEY = "secagg-recipient"

_M = TypeVar("_M")
#: How an array field travels: elements of Z_2^b as little-endian 64-bit words.
_WIRE_ELEMENT = np.dtype("<u8")


def message_type(action: str) -> str:
    """``train.<action>``: the Flower message type of a stage."""
    return f"{MessageType.TRAIN}.{action}"


def to_records(message: Any) -> dict[str, ConfigRecord]:
    """A stage message (anything with ``to_dict()``) as Flower records."""
    fields = {
        k: np.ascontiguousarray(v, dtype=_WIRE_ELEMENT).tobytes() if isinstance(v, np.ndarray)
        else v
        for k, v in message.to_dict().items()
    }
    return {PROTOCOL_KEY: ConfigRecord(fields)}


def from_records(content: RecordDict, cls: type[_M]) -> _M:
    """Rebuild a stage message of class ``cls`` from ``content``.

    Raises:
        SecAggProtocolError: the records are missing or do not form a valid ``cls``.
    """
    if PROTOCOL_KEY not in content:
        raise SecAggProtocolError(f"{cls.__name__}: the message has no '{PROTOCOL_KEY}' record")
    fields: dict[str, Any] = dict(content[PROTOCOL_KEY])
    for name in _array_fields(cls):
        raw = fields.get(name)
        if isinstance(raw, bytes):
            if len(raw) % _WIRE_ELEMENT.itemsize:
                raise SecAggProtocolError(
                    f"{cls.__name__}: field '{name}' holds {len(raw)} bytes, not a whole "
                    f"number of {_WIRE_ELEMENT.itemsize}-byte elements"
                )
            fields[name] = np.frombuffer(raw, dtype=_WIRE_ELEMENT).astype(np.uint64)
    return cls.from_dict(fields)  # type: ignore[attr-defined]


def _array_fields(cls: type) -> tuple[str, ...]:
    """The fields of the stage message class ``cls`` that hold a numpy array."""
    return tuple(f.name for f in dataclasses.fields(cls) if str(f.type) == "np.ndarray")
