"""How the SecAgg+ stages travel as Flower messages; shared by the client and the server.

Each stage is one Message round of type ``train.<action>`` (Flower routes it to the
ClientApp function registered with ``@app.train("<action>")``). A stage message maps onto
a ``RecordDict``: scalars, bytes and lists go into the ``ConfigRecord`` ``"secagg"``,
numpy arrays (only the masked input) into the ``ArrayRecord`` ``"secagg-arrays"``.

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

from typing import Any, TypeVar

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MessageType, RecordDict

from privacy.secagg import SecAggProtocolError, Stage

__all__ = [
    "SETUP",
    "SHARE_SECRETS",
    "MASKED_INPUT",
    "UNMASK",
    "STAGE_OF_ACTION",
    "PROTOCOL_KEY",
    "ARRAYS_KEY",
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
ARRAYS_KEY = "secagg-arrays"
RECIPIENT_KEY = "secagg-recipient"

_M = TypeVar("_M")


def message_type(action: str) -> str:
    """``train.<action>``: the Flower message type of a stage."""
    return f"{MessageType.TRAIN}.{action}"


def to_records(message: Any) -> dict[str, ConfigRecord | ArrayRecord]:
    """A stage message (anything with ``to_dict()``) as Flower records."""
    fields = message.to_dict()
    arrays = {k: v for k, v in fields.items() if isinstance(v, np.ndarray)}
    records: dict[str, ConfigRecord | ArrayRecord] = {
        PROTOCOL_KEY: ConfigRecord({k: v for k, v in fields.items() if k not in arrays})
    }
    if arrays:
        records[ARRAYS_KEY] = ArrayRecord(
            {k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()}
        )
    return records


def from_records(content: RecordDict, cls: type[_M]) -> _M:
    """Rebuild a stage message of class ``cls`` from ``content``.

    Raises:
        SecAggProtocolError: the records are missing or do not form a valid ``cls``.
    """
    if PROTOCOL_KEY not in content:
        raise SecAggProtocolError(f"{cls.__name__}: the message has no '{PROTOCOL_KEY}' record")
    fields: dict[str, Any] = dict(content[PROTOCOL_KEY])
    if ARRAYS_KEY in content:
        fields.update({k: a.numpy() for k, a in content[ARRAYS_KEY].items()})
    return cls.from_dict(fields)  # type: ignore[attr-defined]
