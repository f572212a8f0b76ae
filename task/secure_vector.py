"""What one client puts into the secure sum, and how the server reads the sum back.

Everything a client reports that depends on its data travels as coordinates of one flat
float vector, summed by secure aggregation, so the server learns only cohort totals. With
``L`` model coordinates, a client ``i`` with ``n_i`` training and ``m_i`` validation
records, public weight scale ``W`` and aggregation weight ``a_i``, the vector is

    [ a_i * Delta_i                (L coordinates: the update, parameters in model order)
    | a_i                          weight
    | n_i / W                      num-examples
    | n_i / W * train_loss         train-loss
    | m_i / W * val_loss           val-loss
    | m_i / W * val_accuracy       val-accuracy
    | m_i / W                      val-examples
    | t_i / W                      train-seconds (local training time, which grows with n_i)
    | R k_i / (L + 8)              clipped-fraction (coordinates outside [-R, R]), times R ]

``a_i = n_i / W`` (FedAvg's example weighting, the default), or ``a_i = 1`` with client-level
DP, whose sensitivity analysis needs every client to count equally (Kairouz et al. 2021;
see :mod:`privacy.distributed_dp`). The server multiplies the sums back by ``W`` (by 1 for
uniform weights), so :meth:`VectorLayout.unpack` returns exactly the totals the plain
workflow computes in the clear: ``sum n_i Delta_i``, ``sum n_i``, ``sum n_i train_loss``, ...

Why ``W``. Secure aggregation quantises every coordinate into ``[-R, R]`` (clip range ``R``,
:mod:`privacy.secagg.quantize`). Dividing by a public constant keeps the weighted values in
range: with the defaults (``W = 1000``, ``R = 8``) a coordinate stays exact while
``n_i |Delta_ij| <= R W = 8000`` (a DP-SGD update on the digits scenario has
``n_i max |Delta_ij|`` of about 90). A coordinate beyond ``R`` is clipped to ``+-R`` by the
quantiser; each client counts them into ``clipped-fraction``, so a misconfigured range shows
up in the server's log instead of silently biasing the model.

Error bound. With deterministic rounding each client's coordinate is off by at most
``R / (2^q - 2)``; the decoded sum of ``n`` clients, multiplied back by the unit ``u``
(``W`` or 1), is therefore within ``u n R / (2^q - 2)`` of the float sum per coordinate.
Integer totals are rounded to the nearest integer, which is exact while their own bound is
below 1/2: ``W n R / (2^q - 2)`` for the example counts (and the weight), and
``(L + 8) n / (2^q - 2)`` for the clipped count, whose coordinate spans ``[0, R]`` for that
reason (:meth:`VectorLayout.integer_error_bound`). Overflow is impossible: the protocol
checks ``b >= q + ceil(log2 n)``.

Ring. :meth:`VectorLayout.ring` picks the 32-bit ring ``Z_{2^32}`` with ``q = 32 - ceil(log2
n)`` bits when that leaves at least :data:`MIN_RING32_QUANT_BITS` and keeps every integer
total exact (with the defaults and the seed's CNNs, cohorts of up to 128 clients and a few
more): masks, additions and the masked vector on the wire are half the size of the 64-bit
ring's. Larger cohorts use ``Z_{2^64}`` with ``q = 32`` (exact example counts up to
``2.6e5`` clients). With the defaults and 100 clients (``q = 25``) the summed update
``sum n_i Delta_i`` is within ``2.4e-4 n`` of the float sum per coordinate; with ``q = 32``,
``1.9e-6 n``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from privacy.secagg import SecAggConfig, quantization_error_bound, required_modulus_bits
from task.config import RunConfig

__all__ = [
    "PUBLIC_METRICS",
    "CLEAR_METRICS",
    "EXTRA_COORDINATES",
    "COUNT_COORDINATES",
    "MIN_RING32_QUANT_BITS",
    "SecureTotals",
    "VectorLayout",
]

# What a client publishes in the clear besides its id and status: its cumulative epsilon
# and the mechanism behind it, which the auditor needs. The sample rate is 1 / ceil(N / B),
# so it reveals the size N of the local dataset to within one batch.
PUBLIC_METRICS = ("noise-multiplier", "sample-rate", "delta", "max-grad-norm", "steps")
CLEAR_METRICS = ("epsilon", *PUBLIC_METRICS)

EXTRA_COORDINATES = (
    "weight",
    "num-examples",
    "train-loss",
    "val-loss",
    "val-accuracy",
    "val-examples",
    "train-seconds",
    "clipped-fraction",
)
# Totals that are sums of integers, hence rounded after decoding.
COUNT_COORDINATES = ("weight", "num-examples", "val-examples")
# The fewest quantisation bits the 32-bit ring may leave (a client off by R / (2^24 - 2) at most).
MIN_RING32_QUANT_BITS = 24


@dataclass(frozen=True)
class SecureTotals:
    """The decoded secure sum, in the plain workflow's units."""

    update_sum: dict[str, np.ndarray]
    weight_sum: float
    metric_sums: dict[str, float]
    clipped_coordinates: int


@dataclass(frozen=True)
class VectorLayout:
    """The public layout of a client's secure-aggregation input.

    Attributes:
        names, shapes, dtypes: the model's arrays, in order.
        weight_scale: ``W``, the public constant every data-dependent value is divided by.
        clip_range: ``R``, the quantiser's range (to count clipped coordinates).
        uniform_weights: ``a_i = 1`` (client-level DP) instead of ``a_i = n_i / W``.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[np.dtype, ...]
    weight_scale: float
    clip_range: float
    uniform_weights: bool = False

    @classmethod
    def for_model(
        cls,
        arrays: Mapping[str, np.ndarray],
        *,
        weight_scale: float,
        clip_range: float,
        uniform_weights: bool = False,
    ) -> VectorLayout:
        """The layout for a model whose arrays are ``arrays`` (name -> array)."""
        return cls(
            names=tuple(arrays),
            shapes=tuple(tuple(np.shape(a)) for a in arrays.values()),
            dtypes=tuple(np.asarray(a).dtype for a in arrays.values()),
            weight_scale=float(weight_scale),
            clip_range=float(clip_range),
            uniform_weights=uniform_weights,
        )

    @classmethod
    def for_run(cls, arrays: Mapping[str, np.ndarray], config: RunConfig) -> VectorLayout:
        """The layout a run's configuration implies for a model with ``arrays``."""
        return cls.for_model(
            arrays,
            weight_scale=config.secagg_weight_scale,
            clip_range=config.secagg_clip_range,
            uniform_weights=config.client_dp,
        )

    @property
    def model_length(self) -> int:
        """``L``: the number of model coordinates."""
        return sum(math.prod(s) for s in self.shapes)

    @property
    def length(self) -> int:
        """``L`` plus the extra coordinates."""
        return self.model_length + len(EXTRA_COORDINATES)

    @property
    def unit(self) -> float:
        """What the weighted update and the weight are multiplied back by."""
        return 1.0 if self.uniform_weights else self.weight_scale

    def flatten(self, update: Mapping[str, np.ndarray]) -> np.ndarray:
        """The update as one float64 vector in the layout's parameter order."""
        if tuple(update) != self.names:
            raise ValueError(
                f"update has parameters {list(update)[:3]}..., the model has "
                f"{list(self.names)[:3]}..."
            )
        return np.concatenate([np.ravel(update[n]) for n in self.names], dtype=np.float64)

    def pack(self, update: np.ndarray, metrics: Mapping[str, float]) -> np.ndarray:
        """The client's input vector from its flat ``update`` (already clipped and noised
        where client-level DP asks for it) and its round metrics."""
        if update.shape != (self.model_length,):
            raise ValueError(f"update must have shape ({self.model_length},), got {update.shape}")
        w = self.weight_scale
        n, m = float(metrics["num-examples"]), float(metrics.get("val-examples", 0))
        weight = 1.0 if self.uniform_weights else n / w
        extras = {
            "weight": weight,
            "num-examples": n / w,
            "train-loss": n / w * float(metrics["train-loss"]),
            "val-loss": m / w * float(metrics["val-loss"]) if m else 0.0,
            "val-accuracy": m / w * float(metrics["val-accuracy"]) if m else 0.0,
            "val-examples": m / w,
            "train-seconds": float(metrics.get("train-seconds", 0.0)) / w,
            "clipped-fraction": 0.0,
        }
        vector = np.empty(self.length)
        np.multiply(update, weight, out=vector[: self.model_length])
        vector[self.model_length :] = [extras[k] for k in EXTRA_COORDINATES]
        # Two reductions instead of three temporaries: NaN propagates through min and max,
        # and a vector inside the clip range (the usual case) needs no count.
        lowest, highest = float(vector.min()), float(vector.max())
        if not (math.isfinite(lowest) and math.isfinite(highest)):
            raise ValueError("the update or a metric is NaN or infinite")
        inside = -self.clip_range <= lowest and highest <= self.clip_range
        clipped = 0 if inside else int(np.count_nonzero(np.abs(vector) > self.clip_range))
        vector[-1] = self.clip_range * clipped / self.length
        return vector

    def unpack(self, total: np.ndarray) -> SecureTotals:
        """Read the decoded sum of the clients' vectors back into named totals."""
        if total.shape != (self.length,):
            raise ValueError(f"aggregate must have shape ({self.length},), got {total.shape}")
        extras = dict(zip(EXTRA_COORDINATES, total[self.model_length :].tolist(), strict=True))
        sums = {k: v * self.weight_scale for k, v in extras.items()}
        sums["weight"] = extras["weight"] * self.unit
        for key in COUNT_COORDINATES:
            sums[key] = float(round(sums[key]))
        update_sum, offset = {}, 0
        for name, shape, dtype in zip(self.names, self.shapes, self.dtypes, strict=True):
            size = math.prod(shape)
            chunk = total[offset : offset + size] * self.unit
            update_sum[name] = chunk.reshape(shape).astype(dtype)
            offset += size
        metric_sums = {k: sums[k] for k in EXTRA_COORDINATES[1:-1]}
        return SecureTotals(
            update_sum=update_sum,
            weight_sum=sums["weight"],
            metric_sums=metric_sums,
            clipped_coordinates=int(round(extras["clipped-fraction"] / self.clip_range
                                          * self.length)),
        )

    def error_bound(self, num_clients: int, quant_bits: int, rounding: str) -> float:
        """Worst-case absolute error per coordinate of ``update_sum`` for ``num_clients``
        inputs inside ``[-R, R]``: ``u n R / (2^q - 2)`` (twice that for stochastic rounding)."""
        return self.unit * quantization_error_bound(
            num_clients, self.clip_range, quant_bits, rounding
        )

    def integer_error_bound(self, num_clients: int, quant_bits: int, rounding: str) -> float:
        """Worst-case error, before rounding, of the totals that are integers: the example
        counts and the weight (units ``W`` and ``u``), and the clipped count (unit
        ``(L + 8) / R``). Rounding recovers them exactly while this is below 1/2."""
        unit = max(self.weight_scale, self.unit, self.length / self.clip_range)
        return unit * quantization_error_bound(num_clients, self.clip_range, quant_bits, rounding)

    def ring(self, num_clients: int, rounding: str) -> tuple[int, int]:
        """``(q, b)``: quantisation bits and ring for a cohort of ``num_clients``.

        ``Z_{2^32}`` with ``q = 32 - ceil(log2 n)`` when ``q >= MIN_RING32_QUANT_BITS`` and
        :meth:`integer_error_bound` stays below 1/2; ``Z_{2^64}`` with ``q = 32`` otherwise.
        """
        quant_bits = 32 - required_modulus_bits(0, num_clients)  # the most with b = 32
        if (quant_bits >= MIN_RING32_QUANT_BITS
                and self.integer_error_bound(num_clients, quant_bits, rounding) < 0.5):
            return quant_bits, 32
        defaults = SecAggConfig()  # Z_2^64, q = 32
        return defaults.quant_bits, defaults.modulus_bits
