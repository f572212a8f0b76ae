"""The run configuration: one validated record of every knob of a federated run.

Configuration reaches a run from three places, merged in this order (later wins):

1. ``DEFAULTS`` below (mirrored in ``[tool.flwr.app.config]`` of pyproject.toml);
2. the scenario preset (``task.scenarios``) for the knobs a scenario tunes;
3. what the user set: ``fedshield simulate`` flags, or ``flwr run --run-config``.

In ``[tool.flwr.app.config]`` a scenario-tuned knob may hold ``0`` (numbers) or ``""``
(strings), meaning "take the scenario preset". Everything is validated once, here, before
any training: a bad value raises :class:`ConfigError` naming the key and the allowed range.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from task.scenarios import SCENARIOS, scenario_preset


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type or out of range."""


ACCOUNTANTS = ("prv", "rdp")
PARTITIONINGS = ("iid", "dirichlet", "quantity", "sampled")
SERVER_OPTIMIZERS = ("fedavg", "fedavgm", "fedadam")
ACTIVATIONS = ("relu", "tanh")
MODELS = ("lenet", "scatternet")
DP_ENGINES = ("fast", "opacus")


@dataclass(frozen=True)
class RunConfig:
    """Every knob of a run, with kebab-case names in Flower's run config."""

    scenario: str = "digits"
    num_server_rounds: int = 5
    fraction_train: float = 1.0
    min_train_clients: int = 2
    local_epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 0.1
    momentum: float = 0.0
    model: str = "lenet"
    activation: str = "relu"
    dp: bool = True
    target_epsilon: float = 3.0
    noise_multiplier: float = 0.0
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    augment_multiplicity: int = 1
    accountant: str = "prv"
    dp_engine: str = "fast"
    partitioning: str = "iid"
    dirichlet_alpha: float = 0.5
    records_per_client: int = 16  # partitioning = "sampled" only
    val_fraction: float = 0.1
    seed: int = 42
    data_root: str = ""
    server_optimizer: str = "fedavg"
    server_learning_rate: float = 1.0
    server_momentum: float = 0.9
    server_ema: float = 0.0
    out_dir: str = "runs"
    round_timeout: float = 0.0
    secure_aggregation: bool = True
    secagg_threshold_fraction: float = 0.5
    secagg_clip_range: float = 8.0
    secagg_weight_scale: float = 1000.0
    client_dp: bool = False
    client_noise_multiplier: float = 1.0
    client_clip_norm: float = 5.0
    ledger_dir: str = ""
    client_budgets: str = ""

    def to_flower(self) -> dict[str, bool | int | float | str]:
        """The config as Flower run-config items (kebab-case keys, scalar values)."""
        return {key.replace("_", "-"): value for key, value in asdict(self).items()}

    @property
    def calibrates_noise(self) -> bool:
        """Whether the noise multiplier is derived from the target (epsilon, delta)."""
        return self.dp and self.noise_multiplier == 0.0


DEFAULTS = RunConfig()
_FIELDS = {f.name: f for f in fields(RunConfig)}
# Knobs for which 0 or "" in the run config means "the scenario preset decides".
SCENARIO_TUNED = (
    "num_server_rounds",
    "local_epochs",
    "batch_size",
    "learning_rate",
    "momentum",
    "model",
    "activation",
    "target_epsilon",
    "max_grad_norm",
    "augment_multiplicity",
    "server_optimizer",
    "server_learning_rate",
    "server_ema",
)


def _coerce(key: str, value: Any) -> Any:
    """Convert ``value`` to the type of field ``key`` or raise a ConfigError naming it."""
    kind = type(getattr(DEFAULTS, key))
    flower_key = key.replace("_", "-")
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"config key '{flower_key}' must be true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise ConfigError(f"config key '{flower_key}' must be an integer, got {value!r}")
        return int(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{flower_key}' must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"config key '{flower_key}' must be finite, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"config key '{flower_key}' must be a string, got {value!r}")
    return value


def resolve_config(overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Merge defaults, the scenario preset and ``overrides``; validate the result.

    ``overrides`` may use kebab-case (Flower) or snake_case keys. Unknown keys are an
    error, so a typo never silently falls back to a default.
    """
    given: dict[str, Any] = {}
    for raw_key, value in (overrides or {}).items():
        key = raw_key.replace("-", "_")
        if key not in _FIELDS:
            known = ", ".join(sorted(k.replace("_", "-") for k in _FIELDS))
            raise ConfigError(f"unknown config key '{raw_key}'; known keys: {known}")
        given[key] = _coerce(key, value)

    scenario = given.get("scenario", DEFAULTS.scenario)
    if scenario not in SCENARIOS:
        raise ConfigError(
            f"config key 'scenario' must be one of {', '.join(SCENARIOS)}, got {scenario!r}"
        )
    merged = asdict(DEFAULTS)
    merged.update(scenario_preset(scenario, dp=given.get("dp", DEFAULTS.dp),
                                  target_epsilon=given.get("target_epsilon") or None))
    for key, value in given.items():
        if key in SCENARIO_TUNED and value in (0, 0.0, ""):
            continue
        merged[key] = value
    config = RunConfig(**merged)
    validate_config(config)
    return config


def _require(condition: bool, key: str, allowed: str, value: Any) -> None:
    if not condition:
        raise ConfigError(f"config key '{key}' must be {allowed}, got {value!r}")


def validate_config(config: RunConfig) -> None:
    """Check every knob's range; raise ConfigError naming the first bad key."""
    c = config
    _require(c.num_server_rounds >= 1, "num-server-rounds", ">= 1", c.num_server_rounds)
    _require(0.0 < c.fraction_train <= 1.0, "fraction-train", "in (0, 1]", c.fraction_train)
    _require(c.min_train_clients >= 1, "min-train-clients", ">= 1", c.min_train_clients)
    _require(c.local_epochs >= 1, "local-epochs", ">= 1", c.local_epochs)
    _require(c.batch_size >= 1, "batch-size", ">= 1", c.batch_size)
    _require(c.learning_rate > 0, "learning-rate", "> 0", c.learning_rate)
    _require(0.0 <= c.momentum < 1.0, "momentum", "in [0, 1)", c.momentum)
    _require(c.model in MODELS, "model", f"one of {MODELS}", c.model)
    _require(c.activation in ACTIVATIONS, "activation", f"one of {ACTIVATIONS}", c.activation)
    _require(1 <= c.augment_multiplicity <= 64, "augment-multiplicity",
             "in [1, 64] (1 = no augmentation)", c.augment_multiplicity)
    _require(c.augment_multiplicity == 1 or c.model == "lenet", "augment-multiplicity",
             "1 with model 'scatternet' (its copies would be shifted pixels, but it "
             "learns on scattering features)", c.augment_multiplicity)
    if c.dp:
        _require(c.target_epsilon > 0, "target-epsilon", "> 0", c.target_epsilon)
        _require(c.noise_multiplier >= 0, "noise-multiplier", ">= 0 (0 = calibrate)",
                 c.noise_multiplier)
        _require(0.0 < c.delta < 1.0, "delta", "in (0, 1)", c.delta)
        _require(c.max_grad_norm > 0, "max-grad-norm", "> 0", c.max_grad_norm)
        _require(c.accountant in ACCOUNTANTS, "accountant", f"one of {ACCOUNTANTS}",
                 c.accountant)
        _require(c.dp_engine in DP_ENGINES, "dp-engine", f"one of {DP_ENGINES}", c.dp_engine)
        _require(c.augment_multiplicity == 1 or c.dp_engine == "fast", "augment-multiplicity",
                 "1 with dp-engine 'opacus' (only the fast engine averages a record's "
                 "augmented copies before clipping)", c.augment_multiplicity)
    _require(c.partitioning in PARTITIONINGS, "partitioning", f"one of {PARTITIONINGS}",
             c.partitioning)
    _require(c.dirichlet_alpha > 0, "dirichlet-alpha", "> 0", c.dirichlet_alpha)
    _require(c.records_per_client >= 2, "records-per-client", ">= 2", c.records_per_client)
    _require(0.0 <= c.val_fraction < 1.0, "val-fraction", "in [0, 1)", c.val_fraction)
    _require(c.seed >= 0, "seed", ">= 0", c.seed)
    _require(c.server_optimizer in SERVER_OPTIMIZERS, "server-optimizer",
             f"one of {SERVER_OPTIMIZERS}", c.server_optimizer)
    _require(c.server_learning_rate > 0, "server-learning-rate", "> 0",
             c.server_learning_rate)
    _require(0.0 <= c.server_momentum < 1.0, "server-momentum", "in [0, 1)",
             c.server_momentum)
    _require(0.0 <= c.server_ema < 1.0, "server-ema", "in [0, 1) (0 = no averaging)",
             c.server_ema)
    _require(bool(c.out_dir), "out-dir", "a directory path", c.out_dir)
    _require(c.round_timeout >= 0, "round-timeout", ">= 0 seconds (0 = no limit)",
             c.round_timeout)
    _validate_secure_aggregation(c)
    parse_client_budgets(c.client_budgets)


def _validate_secure_aggregation(c: RunConfig) -> None:
    """Secure aggregation and client-level DP knobs (see task.secure_vector and
    privacy.distributed_dp for what they bound)."""
    _require(0.5 <= c.secagg_threshold_fraction <= 1.0, "secagg-threshold-fraction",
             "in [0.5, 1]", c.secagg_threshold_fraction)
    _require(c.secagg_clip_range > 0, "secagg-clip-range", "> 0", c.secagg_clip_range)
    _require(c.secagg_weight_scale > 0, "secagg-weight-scale", "> 0", c.secagg_weight_scale)
    if c.secure_aggregation:
        _require(c.min_train_clients >= 2, "min-train-clients",
                 ">= 2 with secure-aggregation on (a sum of one update is that update)",
                 c.min_train_clients)
    if c.client_dp:
        _require(c.secure_aggregation, "client-dp",
                 "false unless secure-aggregation is true (the noise is added in shares that "
                 "only the secure sum adds up)", c.client_dp)
        _require(c.client_noise_multiplier > 0, "client-noise-multiplier", "> 0",
                 c.client_noise_multiplier)
        _require(0 < c.client_clip_norm <= c.secagg_clip_range, "client-clip-norm",
                 f"in (0, secagg-clip-range={c.secagg_clip_range:g}]", c.client_clip_norm)
        _require(0.0 < c.delta < 1.0, "delta", "in (0, 1)", c.delta)
        _require(c.accountant in ACCOUNTANTS, "accountant", f"one of {ACCOUNTANTS}",
                 c.accountant)


def parse_client_budgets(text: str) -> dict[str, float]:
    """``"client-0=1.0, client-3=2.5"`` -> ``{"client-0": 1.0, "client-3": 2.5}``.

    Per-client epsilon budgets set by the run (a stand-in, in simulation, for each node's
    own node config ``epsilon-budget``, which always wins). ConfigError names a bad item.
    """
    budgets: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        client, sep, value = (piece.strip() for piece in item.partition("="))
        try:
            budget = float(value) if sep and client else math.nan
        except ValueError:
            budget = math.nan
        _require(math.isfinite(budget) and budget > 0, "client-budgets",
                 "comma-separated CLIENT=EPSILON items with EPSILON > 0", item)
        _require(client not in budgets, "client-budgets", "free of repeated clients", item)
        budgets[client] = budget
    return budgets
