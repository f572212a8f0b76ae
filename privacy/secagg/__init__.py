"""Secure aggregation (SecAgg+) as pure, Flower-free state machines.

The server learns the sum of the clients' quantised updates and nothing else about any
individual update, even when up to ``n - t`` clients (per neighbourhood) drop out.

References:
    K. Bonawitz, V. Ivanov, B. Kreuter, A. Marcedone, H. B. McMahan, S. Patel, D. Ramage,
    A. Segal, K. Seth. "Practical Secure Aggregation for Privacy-Preserving Machine
    Learning." ACM CCS 2017.
    J. H. Bell, K. A. Bonawitz, A. Gascon, T. Lepoint, M. Raykova. "Secure Single-Server
    Aggregation with (Poly)Logarithmic Overhead." ACM CCS 2020 (SecAgg+).

Module map:
    config      SecAggConfig and the rules for degree ``k`` and threshold ``t``
    graph       the neighbour graph (complete, or a randomly permuted Harary graph)
    keys        X25519 key pairs and HKDF-SHA256 derivation with per-use labels
    masking     AES-256-CTR mask expansion, pairwise and self masks
    shamir      Shamir secret sharing over GF(2^521 - 1)
    channel     AES-256-GCM encryption of shares between clients
    quantize    fixed-point encoding into Z_{2^b}, with error and overflow bounds
    messages    the stage messages (plain dataclasses with to_dict/from_dict)
    client      SecAggClient, one method per stage
    server      SecAggServer, one method per stage, and SecAggResult
    driver      run_secagg_round: a whole round in one process
    errors      SecAggError and its subclasses

A round, message by message (``server`` is a :class:`SecAggServer`, ``clients[u]`` a
:class:`SecAggClient`; in Flower each arrow is one message per client)::

    setup = server.setup()                                          # broadcast
    keys = server.collect_public_keys([c.share_keys(setup) for c in clients.values()])
    fwd = server.collect_encrypted_shares([clients[u].share_secrets(keys[u]) for u in keys])
    req = server.collect_masked_inputs([clients[u].mask_input(fwd[u], x[u]) for u in fwd])
    result = server.collect_unmask_responses([clients[u].unmask(req[u]) for u in req])
    result.aggregate, result.contributors
"""

from privacy.secagg.client import RoundKeys, SecAggClient
from privacy.secagg.config import SecAggConfig, default_threshold, resolve_round_parameters
from privacy.secagg.driver import DROP_STAGES, run_secagg_round
from privacy.secagg.errors import (
    SecAggAbort,
    SecAggConfigError,
    SecAggError,
    SecAggProtocolError,
    SecAggTamperError,
)
from privacy.secagg.graph import build_neighbour_graph, default_degree
from privacy.secagg.masking import MASK_KEY_BYTES, expand_mask
from privacy.secagg.messages import (
    EncryptedShare,
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
from privacy.secagg.quantize import (
    dequantize,
    quantization_error_bound,
    quantize,
    required_modulus_bits,
)
from privacy.secagg.server import SecAggResult, SecAggServer

__all__ = [
    "SecAggConfig",
    "SecAggClient",
    "RoundKeys",
    "SecAggServer",
    "SecAggResult",
    "run_secagg_round",
    "DROP_STAGES",
    "Stage",
    "SetupMessage",
    "PublicKeys",
    "NeighbourKeys",
    "EncryptedShare",
    "EncryptedShares",
    "ForwardedShares",
    "MaskedInput",
    "UnmaskRequest",
    "UnmaskResponse",
    "SecAggError",
    "SecAggAbort",
    "SecAggTamperError",
    "SecAggProtocolError",
    "SecAggConfigError",
    "default_degree",
    "default_threshold",
    "resolve_round_parameters",
    "build_neighbour_graph",
    "expand_mask",
    "MASK_KEY_BYTES",
    "quantize",
    "dequantize",
    "quantization_error_bound",
    "required_modulus_bits",
]
