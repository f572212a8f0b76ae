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
secagg_share_secrets   NeighbourKeys (and SetupMessage  EncryptedShares
                       if the client published keys)
secagg_masked_input    model, config, ForwardedShares   status, public metrics, MaskedInput,
                                                        next public keys
secagg_unmask          UnmaskRequest (and the next      UnmaskResponse (and the next
                       round's share secrets)           round's encrypted shares)
=====================  ==============================  ===============================

Keys published ahead. With its masked input a client publishes the two public keys of
fresh key pairs for the next round it takes part in (``"secagg-next-keys"``). If it is in
the next round's cohort, the server skips its ``secagg_setup`` and sends the round's
``SetupMessage`` with that round's share secrets instead (``"secagg-setup"``); the client
starts the round there with the keys it published, each pair used for one round only.

Next round's shares with this round's unmask. A client still in the round and sampled for
the next one gets the next round's ``secagg_share_secrets`` inside its ``secagg_unmask``
message: the same records under names prefixed ``"next-"`` (:func:`nest`), answered
under the same prefix beside its unmask response. It unmasks first, so the round's
secrets are gone before the next round starts.

The protocol's client ids are small integers (the client's position in the sorted cohort,
sent in ``"secagg-recipient"``), because Flower node ids are unsigned 64-bit and
``ConfigRecord`` integers are signed 64-bit.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
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
    "SETUP_KEY",
    "NEXT_KEYS_KEY",
    "NEXT_ROUND_PREFIX",
    "nest",
    "next_round_part",
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
# The round's SetupMessage, with secagg_share_secrets to a client that published its keys.
SETUP_KEY = "secagg-setup"
# The public keys a client publishes for its next round: "share-public-key", "mask-public-key".
NEXT_KEYS_KEY = "secagg-next-keys"
# Records of the next round's stage carried inside this round's unmask message and reply.
NEXT_ROUND_PREFIX = "next-"

_M = TypeVar("_M")
#: The words an array field may travel in (elements of Z_2^b), by their size in bytes.
_WIRE_WORDS = {4: np.dtype("<u4"), 8: np.dtype("<u8")}
_WORD_BYTES = ":word-bytes"


def message_type(action: str) -> str:
    """``train.<action>``: the Flower message type of a stage."""
    return f"{MessageType.TRAIN}.{action}"


def to_records(message: Any, key: str = PROTOCOL_KEY) -> dict[str, ConfigRecord]:
    """A stage message (anything with ``to_dict()``) as the Flower record ``key``."""
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
    return {key: ConfigRecord(fields)}


def nest(content: Mapping[str, Any]) -> dict[str, Any]:
    """The records of ``content`` renamed to travel as the next round's part of a message."""
    return {NEXT_ROUND_PREFIX + name: record for name, record in content.items()}


def next_round_part(content: RecordDict) -> RecordDict | None:
    """The next round's records nested in ``content`` (:func:`nest`), or ``None``."""
    part = {name[len(NEXT_ROUND_PREFIX):]: record for name, record in content.items()
            if name.startswith(NEXT_ROUND_PREFIX)}
    return RecordDict(part) if part else None


def from_records(content: RecordDict, cls: type[_M], key: str = PROTOCOL_KEY) -> _M:
    """Rebuild a stage message of class ``cls`` from the record ``key`` of ``content``.

    An array field is a read-only view of the record's bytes on a little-endian host: a
    copy cost the server 0.13 ms a client and round (a cohort's masked inputs are held
    at once, each copy in fresh memory).

    Raises:
        SecAggProtocolError: the record is missing or does not form a valid ``cls``.
    """
    if key not in content:
        raise SecAggProtocolError(f"{cls.__name__}: the message has no '{key}' record")
    fields: dict[str, Any] = dict(content[key])
    for name in _array_fields(cls):
        raw, word_bytes = fields.get(name), fields.pop(name + _WORD_BYTES, None)
        if isinstance(raw, bytes):
            word = _WIRE_WORDS.get(word_bytes) if isinstance(word_bytes, int) else None
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
            vector = np.frombuffer(raw, dtype=word)
            fields[name] = vector if word.isnative else vector.astype(word.newbyteorder("="))
    return cls.from_dict(fields)  # type: ignore[attr-defined]


@functools.cache
def _array_fields(cls: type) -> tuple[str, ...]:
    """The fields of the stage message class ``cls`` that hold a numpy array."""
    return tuple(f.name for f in dataclasses.fields(cls) if str(f.type) == "np.ndarray")
