"""How a client's privacy ledger travels between it and the coordinator.

Server -> client, in a training message's config: the newest entry of the client's ledger
that the coordinator's merged copy holds (``HELD_LEDGER_KEY``, ``HELD_SEQ_KEY``; absent
before the client's first merge). Client -> server, the reply's ``ConfigRecord``
``REPLY_RECORD``: the client's budget, public key and head, and its signed entries after
the held one (every entry when none is held). See ``client.ledger_charge`` and
``server.ledger_merge``.
"""

from __future__ import annotations

#: Name of the reply's record that carries the ledger fields.
REPLY_RECORD = "ledger"
#: Training-config keys: the id of the client's ledger and the seq of its newest entry
#: that the coordinator holds.
HELD_LEDGER_KEY = "ledger-held-id"
HELD_SEQ_KEY = "ledger-held-seq"
