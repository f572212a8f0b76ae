"""An in-process driver that runs one SecAgg+ round end to end (tests, benchmarks, demos).

It plays the server and every client in one process and passes each message through
``to_dict()``/``from_dict()`` on the way, exactly as the Flower glue will serialise them
into records, so a round driven here exercises the same code paths as a deployment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from privacy.secagg.client import SecAggClient
from privacy.secagg.config import SecAggConfig
from privacy.secagg.errors import SecAggConfigError
from privacy.secagg.keys import Rng
from privacy.secagg.messages import (
    EncryptedShares,
    ForwardedShares,
    MaskedInput,
    NeighbourKeys,
    PublicKeys,
    SetupMessage,
    Stage,
    UnmaskRequest,
    UnmaskResponse,
)
from privacy.secagg.server import SecAggResult, SecAggServer

__all__ = ["DROP_STAGES", "run_secagg_round"]

DROP_STAGES = (
    Stage.SHARE_KEYS,
    Stage.SHARE_SECRETS,
    Stage.COLLECT_MASKED_INPUT,
    Stage.UNMASK,
)
"""Valid keys of ``drop_at``: a client listed under a stage does not answer that stage or
any later one. ``share_secrets`` = dropped after key sharing, ``collect_masked_input`` =
dropped after secret sharing, ``unmask`` = dropped after sending its masked input."""


def run_secagg_round(
    vectors: Mapping[int, np.ndarray],
    params: SecAggConfig | None = None,
    drop_at: Mapping[str, set[int]] | None = None,
    *,
    run_id: str = "local-run",
    round_id: int = 0,
    rng: Rng = os.urandom,
) -> SecAggResult:
    """Run one SecAgg+ round over ``vectors`` (client id -> 1-D float vector).

    Args:
        vectors: every cohort member's update; all of the same length.
        params: protocol settings (``SecAggConfig()`` by default).
        drop_at: stage name (see :data:`DROP_STAGES`) -> ids of clients that drop out
            at that stage, i.e. never answer it or any later stage.
        run_id, round_id: bound into every key and ciphertext.
        rng: randomness for the server and every client (``os.urandom`` by default).

    Returns:
        The server's :class:`SecAggResult`: float sum of the contributors' vectors.

    Raises:
        SecAggAbort: fewer than ``t`` clients survive a stage.
    """
    drop_at = dict(drop_at or {})
    unknown_stages = set(drop_at) - set(DROP_STAGES)
    if unknown_stages:
        raise SecAggConfigError(
            f"drop_at keys must be in {DROP_STAGES}, got {sorted(unknown_stages)}"
        )
    ids = sorted(vectors)
    for stage, dropped in drop_at.items():
        if not set(dropped) <= set(ids):
            raise SecAggConfigError(f"drop_at['{stage}'] names clients outside the cohort")
    lengths = {np.asarray(v).shape for v in vectors.values()}
    if len(lengths) != 1 or len(next(iter(lengths))) != 1:
        raise SecAggConfigError("vectors must all be 1-D and of the same length")
    length = next(iter(lengths))[0]

    gone: set[int] = set()

    def alive(stage: str) -> list[int]:
        gone.update(drop_at.get(stage, set()))
        return [u for u in ids if u not in gone]

    server = SecAggServer(ids, length, params, run_id=run_id, round_id=round_id, rng=rng)
    clients = {u: SecAggClient(u, rng=rng) for u in ids}

    setup = SetupMessage.from_dict(server.setup().to_dict())
    keys = [
        PublicKeys.from_dict(clients[u].share_keys(setup).to_dict())
        for u in alive(Stage.SHARE_KEYS)
    ]
    to_clients = server.collect_public_keys(keys)
    shares = [
        EncryptedShares.from_dict(
            clients[u].share_secrets(NeighbourKeys.from_dict(to_clients[u].to_dict())).to_dict()
        )
        for u in alive(Stage.SHARE_SECRETS)
        if u in to_clients
    ]
    forwarded = server.collect_encrypted_shares(shares)
    masked = [
        MaskedInput.from_dict(
            clients[u]
            .mask_input(ForwardedShares.from_dict(forwarded[u].to_dict()), vectors[u])
            .to_dict()
        )
        for u in alive(Stage.COLLECT_MASKED_INPUT)
        if u in forwarded
    ]
    requests = server.collect_masked_inputs(masked)
    responses = [
        UnmaskResponse.from_dict(
            clients[u].unmask(UnmaskRequest.from_dict(requests[u].to_dict())).to_dict()
        )
        for u in alive(Stage.UNMASK)
        if u in requests
    ]
    return server.collect_unmask_responses(responses)
