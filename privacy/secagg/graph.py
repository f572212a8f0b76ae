"""The SecAgg+ neighbour graph: who masks with whom and who holds whose shares.

Bonawitz et al. (CCS 2017) use the complete graph: every pair of clients shares a pairwise
mask and every client Shamir-shares its secrets with all others, which costs ``O(n)`` key
agreements and mask expansions per client. Bell et al., "Secure Single-Server Aggregation
with (Poly)Logarithmic Overhead", CCS 2020 (SecAgg+), replace it by a sparse random graph of
degree ``k = O(log n)``; their practical instantiation (also Flower's) is a Harary graph
``H(k, n)`` laid on a random permutation of the clients: place the clients on a ring in a
random order and join each to its ``floor(k/2)`` nearest clients on either side, plus, if
``k`` is odd, to the client diametrically opposite (possible only for even ``n``).

The permutation must be the same for every party and unpredictable before the round, so
the server publishes a fresh 32-byte ``graph_seed`` in the setup message and every party
derives the permutation from ``HKDF(graph_seed, "neighbour-graph-key", run, round)`` by a
Fisher-Yates shuffle driven by the ChaCha20 keystream (unbiased rejection sampling). The
construction depends only on ``cryptography`` and integer arithmetic, so it is identical
across platforms and library versions (unlike, e.g., numpy's shuffles).

Defaults (:func:`default_degree`): the complete graph for ``n <= 20`` clients; above that,
``k = ceil(log2 n)``, raised by one when ``n * k`` is odd (no ``k``-regular graph exists
then). That is the minimal SecAgg+ regime; it tolerates ``floor((k - 1) / 2)`` dropouts per
neighbourhood with the default threshold. Bell et al. (section 4, Table 1) size ``k`` from
the tolerated dropout and corruption rates and the failure probability -- raise ``degree``
for deployments that expect many dropouts or colluding clients.
"""

from __future__ import annotations

import functools

from collections.abc import Sequence

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from privacy.secagg.errors import SecAggConfigError
from privacy.secagg.keys import LABEL_NEIGHBOUR_GRAPH, derive_key

__all__ = [
    "DEFAULT_FULL_GRAPH_MAX_CLIENTS",
    "default_degree",
    "validate_degree",
    "build_neighbour_graph",
]

DEFAULT_FULL_GRAPH_MAX_CLIENTS = 20
"""Cohorts up to this size use the complete graph (every pair masks)."""


def default_degree(
    num_clients: int, full_graph_max_clients: int = DEFAULT_FULL_GRAPH_MAX_CLIENTS
) -> int:
    """Neighbours per client (excluding itself) for a cohort of ``num_clients``.

    ``n - 1`` (complete graph) if ``n <= full_graph_max_clients``; otherwise
    ``k = ceil(log2 n)``, plus one if ``n * k`` is odd, capped at ``n - 1``.
    """
    if num_clients < 2:
        raise SecAggConfigError(f"secure aggregation needs >= 2 clients, got {num_clients}")
    if num_clients <= full_graph_max_clients:
        return num_clients - 1
    k = (num_clients - 1).bit_length()  # ceil(log2 n) for n >= 2
    if (num_clients * k) % 2:
        k += 1
    return min(k, num_clients - 1)


def validate_degree(num_clients: int, degree: int) -> None:
    """Raise :class:`SecAggConfigError` unless a ``degree``-regular graph on
    ``num_clients`` vertices exists (``1 <= k <= n - 1`` and ``n * k`` even)."""
    if not 1 <= degree <= num_clients - 1:
        raise SecAggConfigError(
            f"degree must be in [1, {num_clients - 1}] for {num_clients} clients, got {degree}"
        )
    if degree < num_clients - 1 and (num_clients * degree) % 2:
        raise SecAggConfigError(
            f"degree={degree} is odd and the cohort size {num_clients} is odd: no "
            f"{degree}-regular graph exists; use degree={degree + 1}"
        )


class _KeystreamIntegers:
    """Uniform integers below a bound from a ChaCha20 keystream (rejection sampling)."""

    _CHUNK = 8 * 256

    def __init__(self, key: bytes) -> None:
        self._encryptor = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
        self._buffer = b""
        self._pos = 0

    def _next_u64(self) -> int:
        if self._pos + 8 > len(self._buffer):
            self._buffer = self._encryptor.update(bytes(self._CHUNK))
            self._pos = 0
        value = int.from_bytes(self._buffer[self._pos : self._pos + 8], "little")
        self._pos += 8
        return value

    def below(self, bound: int) -> int:
        limit = (1 << 64) - (1 << 64) % bound  # largest multiple of bound <= 2^64
        while True:
            value = self._next_u64()
            if value < limit:
                return value % bound


def build_neighbour_graph(
    client_ids: Sequence[int],
    degree: int,
    graph_seed: bytes,
    *,
    run_id: str,
    round_id: int,
) -> dict[int, tuple[int, ...]]:
    """Neighbours (sorted, excluding the client itself) of every client.

    ``degree == n - 1`` gives the complete graph; otherwise the Harary graph
    ``H(degree, n)`` on the permutation of ``sorted(client_ids)`` derived from
    ``graph_seed``, ``run_id`` and ``round_id``. Every party calling this with the same
    arguments gets the same graph.
    """
    return dict(_cached_graph(tuple(sorted(client_ids)), degree, bytes(graph_seed), run_id, round_id))


# A client restores its protocol state once per stage and the graph is a pure function of
# public values; rebuilding it (a keystream-driven shuffle of the cohort) was a fifth of
# a client's protocol time at 100 clients.
@functools.lru_cache(maxsize=64)
def _cached_graph(
    ids: tuple[int, ...], degree: int, graph_seed: bytes, run_id: str, round_id: int
) -> dict[int, tuple[int, ...]]:
    n = len(ids)
    if len(set(ids)) != n:
        raise SecAggConfigError("client ids must be distinct")
    validate_degree(n, degree)
    if degree == n - 1:
        return {u: tuple(v for v in ids if v != u) for u in ids}

    stream = _KeystreamIntegers(derive_key(graph_seed, LABEL_NEIGHBOUR_GRAPH, run_id, round_id))
    order = list(ids)
    for i in range(n - 1, 0, -1):  # Fisher-Yates
        j = stream.below(i + 1)
        order[i], order[j] = order[j], order[i]

    offsets = list(range(1, degree // 2 + 1))
    neighbours: dict[int, set[int]] = {u: set() for u in ids}
    for pos, u in enumerate(order):
        for d in offsets:
            v = order[(pos + d) % n]
            neighbours[u].add(v)
            neighbours[v].add(u)
        if degree % 2:
            neighbours[u].add(order[(pos + n // 2) % n])
    return {u: tuple(sorted(vs)) for u, vs in neighbours.items()}
