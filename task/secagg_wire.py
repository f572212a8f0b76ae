"""How the SecAgg+ stages travel as Flower messages; shared by the client and the server.

Each stage is one Message round of type ``train.<action>`` (Flower routes it to the
ClientApp function registered with ``@app.train("<action>")``). A stage message maps onto
a ``RecordDict``: its fields go into the ``ConfigRecord`` ``"secagg"``, the one array (the
masked input, elements of ``Z_{2^b}`` in the ring's 32- or 64-bit word) as its raw
little-endian bytes, with the word's size in bytes beside it (``"<field>:word-bytes"``).
Raw bytes, not an ``ArrayRecord``: an ``Array`` is a ``.npy`` file in memory, and writing
and parsing that for 500 KB took about 0.5 ms at each end, per client and round, on the
server's one thread for every client of the cohort.

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
import functools
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
#: The words an array field may travel in (elements of Z_2^b), by their size in bytes.
_WIRE_WORDS = {4: np.dtype("<u4"), 8: np.dtype("<u8")}
_WORD_BYTES = ":word-bytes"


def message_type(action: str) -> str:
    """``train.<action>``: the Flower message type of a stage."""
    return f"{MessageType.TRAIN}.{action}"


def to_records(message: Any) -> dict[str, ConfigRecord]:
    """A stage message (anything with ``to_dict()``) as Flower records."""
    fields: dict[str, Any] = {}
    for k, v in message.to_dict().items():
        if isinstance(v, np.ndarray):
            word = _WIRE_WORDS.get(v.dtype.itemsize)
            if v.dtype.kind != "u" or word is None:
                raise SecAggProtocolError(
                    f"{type(message).__name__}: field '{k}' is a {v.dtype} array; ring "
                    f"elements travel as uint32 or uint64"
                )
            fields[k] = np.ascontiguousarray(v, dtype=word).tobytes()
            fields[k + _WORD_BYTES] = word.itemsize
        else:
            fields[k] = v
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
        raw, word_bytes = fields.get(name), fields.pop(name + _WORD_BYTES, None)
        if isinstance(raw, bytes):
            word = _WIRE_WORDS.get(word_bytes)  # type: ignore[arg-type]
            if word is None:
                raise SecAggProtocolError(
                    f"{cls.__name__}: field '{name}' comes with word size {word_bytes!r}, "
                    f"not one of {sorted(_WIRE_WORDS)} bytes"
                )
            if len(raw) % word.itemsize:
                raise SecAggProtocolError(
                    f"{cls.__name__}: field '{name}' holds {len(raw)} bytes, not a whole "
                    f"number of {word.itemsize}-byte elements"
                )
            fields[name] = np.frombuffer(raw, dtype=word).astype(word.newbyteorder("="))
    return cls.from_dict(fields)  # type: ignore[attr-defined]


@functools.cache
def _array_fields(cls: type) -> tuple[str, ...]:
    """The fields of the stage message class ``cls`` that hold a numpy array."""
    return tuple(f.name for f in dataclasses.fields(cls) if str(f.type) == "np.ndarray")
