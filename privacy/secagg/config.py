"""User-facing knobs of secure aggregation and the rules that derive the round parameters.

:class:`SecAggConfig` is what an operator sets (e.g. from ``[tool.flwr.app.config]``);
:func:`resolve_round_parameters` turns it plus the cohort size into the concrete degree
``k`` and threshold ``t`` published in the setup message, validating everything once, at
the edge, with messages that name the key and its allowed range.

Threshold. Each client Shamir-shares its secrets among its *neighbourhood*, its ``k``
neighbours plus itself (``m = k + 1`` shares; ``m = n`` for the complete graph). The
default is the smallest honest majority, ``t = floor(m / 2) + 1``, and any explicit value
must satisfy ``m / 2 < t <= m``: with ``t > m / 2`` no set of ``t`` seed shares and ``t``
key shares of the same client can both exist, even if a server lied to different clients
about who dropped (each honest client reveals only one kind of share per peer), and
``t - 1`` colluding neighbours learn nothing. The protocol tolerates ``m - t`` dropouts per
neighbourhood: for ``n = 10`` clients (complete graph) the default is ``t = 6``, so four
dropouts are survivable and a fifth aborts.
"""

from __future__ import annotations

from dataclasses import dataclass

from privacy.secagg.errors import SecAggConfigError
from privacy.secagg.graph import (
    DEFAULT_FULL_GRAPH_MAX_CLIENTS,
    default_degree,
    validate_degree,
)
from privacy.secagg.quantize import validate_quantization

__all__ = ["SecAggConfig", "default_threshold", "validate_threshold", "resolve_round_parameters"]


@dataclass(frozen=True)
class SecAggConfig:
    """Operator settings for one secure-aggregation round.

    Attributes:
        threshold: Shamir threshold ``t``; ``None`` means ``floor((k + 1) / 2) + 1``.
        degree: neighbours per client ``k``; ``None`` means :func:`default_degree`
            (complete graph up to ``full_graph_max_clients``, else ``~ceil(log2 n)``).
        full_graph_max_clients: largest cohort that uses the complete graph (default 20).
        clip_range: ``R``; every coordinate is clipped to ``[-R, R]`` (default 8.0). Set it
            at or above the per-coordinate bound of the clipped updates (for DP updates,
            the clipping norm bounds every coordinate).
        quant_bits: ``q``; each coordinate becomes an integer in
            ``[-(2^(q-1) - 1), 2^(q-1) - 1]`` (default 32).
        modulus_bits: ``b``; arithmetic is in ``Z_{2^b}``; needs ``b >= q + ceil(log2 n)``
            and ``b <= 64`` (default 64: up to ``2^32`` clients at ``q = 32``). Rings of
            ``b <= 32`` bits are held in ``uint32`` words: half the keystream, additions
            and wire of ``uint64``.
        rounding: ``"deterministic"`` (default) or ``"stochastic"`` (unbiased).
    """

    threshold: int | None = None
    degree: int | None = None
    full_graph_max_clients: int = DEFAULT_FULL_GRAPH_MAX_CLIENTS
    clip_range: float = 8.0
    quant_bits: int = 32
    modulus_bits: int = 64
    rounding: str = "deterministic"

    def validate(self, num_clients: int | None = None) -> None:
        """Check every field (and the cohort-dependent rules if ``num_clients`` is given)."""
        if self.full_graph_max_clients < 1:
            raise SecAggConfigError(
                f"full_graph_max_clients must be >= 1, got {self.full_graph_max_clients}"
            )
        validate_quantization(
            clip_range=self.clip_range,
            quant_bits=self.quant_bits,
            modulus_bits=self.modulus_bits,
            rounding=self.rounding,
            num_clients=num_clients,
        )
        if num_clients is not None:
            resolve_round_parameters(self, num_clients)


def default_threshold(neighbourhood_size: int) -> int:
    """``floor(m / 2) + 1`` for a neighbourhood of ``m`` clients (the client included)."""
    return neighbourhood_size // 2 + 1


def validate_threshold(threshold: int, neighbourhood_size: int) -> None:
    """Raise unless ``m / 2 < t <= m`` (and ``t >= 2``)."""
    low = max(default_threshold(neighbourhood_size), 2)
    if not low <= threshold <= neighbourhood_size:
        raise SecAggConfigError(
            f"threshold must be in [{low}, {neighbourhood_size}] for a neighbourhood of "
            f"{neighbourhood_size} clients (degree + 1), got {threshold}"
        )


def resolve_round_parameters(config: SecAggConfig, num_clients: int) -> tuple[int, int]:
    """Return ``(degree, threshold)`` for a cohort of ``num_clients``, validated."""
    if num_clients < 2:
        raise SecAggConfigError(f"secure aggregation needs >= 2 clients, got {num_clients}")
    degree = (
        default_degree(num_clients, config.full_graph_max_clients)
        if config.degree is None
        else min(config.degree, num_clients - 1)
    )
    validate_degree(num_clients, degree)
    neighbourhood = degree + 1
    threshold = default_threshold(neighbourhood) if config.threshold is None else config.threshold
    validate_threshold(threshold, neighbourhood)
    return degree, threshold
