"""A client's own privacy ledger: its budget, its spend, and a signed charge per round.

Each client keeps its own ledger file and Ed25519 key in its ledger folder:

    <ledger-dir>/<client-id>.sqlite   its PrivacyLedger: the durable record of its spend
    <ledger-dir>/<client-id>.key      its Ed25519 private key (mode 0600, never sent anywhere)

The folder is the node config's ``ledger-dir`` (deployed: a path on the client's own
volume, kept across runs and restarts), else the run config's ``ledger-dir``, else
``<out-dir>/<run-id>/ledgers`` (simulation: fresh ledgers for every run).

The budget is the node config's ``epsilon-budget`` and ``delta``; else the run config's
``client-budgets`` entry for this client; else the run's ``target-epsilon`` (when the noise
is calibrated to it; with a fixed noise multiplier there is no default budget) and
``delta``. It covers every sample-level charge in the client's ledger.

The ledger is the source of truth: the accountant history is read back from it every
round, so a client that restarts (or joins a new run with the same ledger folder) goes on
from the epsilon it has already spent; Flower's ``Context.state`` is only a cache. Order
within a round: history from the ledger, projected epsilon, decline or train, then the
signed charge is appended and committed (fsynced) *before* the reply, which carries the
client's signed entries and its new head, can leave the client.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Message

from client.local_round import LocalRoundOutcome
from privacy.accounting import DPStep, merge_history
from privacy.ledger import ClientSigner, LedgerEntry, LedgerError, PrivacyCharge, PrivacyLedger
from privacy.report.layout import CLIENT_LEDGER_DIR, SAFE_NAME, client_key_path, client_ledger_path
from task.config import ConfigError, RunConfig, parse_client_budgets
from task.ledger_wire import HELD_LEDGER_KEY, HELD_SEQ_KEY, REPLY_RECORD

#: Keys of a training message's config that are about the round, not run configuration.
ROUND_KEYS = ("server-round", "run-id", HELD_LEDGER_KEY, HELD_SEQ_KEY)
#: Node config keys a client may set for itself.
LEDGER_DIR_KEY = "ledger-dir"
BUDGET_KEY = "epsilon-budget"
DELTA_KEY = "delta"
#: The mechanism DP-SGD runs: Poisson-subsampled Gaussian, per-sample clipping.
MECHANISM = "subsampled_gaussian"
UNIT = "sample"
#: Fault injection for the crash test: with this variable set to ``kill-after-charge`` the
#: process SIGKILLs itself right after a charge is committed, before any reply is built.
FAULT_ENV = "FEDSHIELD_FAULT"


@dataclass(frozen=True)
class ClientBudget:
    """A client's (epsilon, delta) budget and where it came from."""

    epsilon: float  # math.inf: no budget
    delta: float
    source: str

    def to_record(self) -> dict[str, float | str]:
        """The budget as published to the coordinator (no epsilon key when unlimited)."""
        record: dict[str, float | str] = {"budget-delta": self.delta, "budget-source": self.source}
        if math.isfinite(self.epsilon):
            record["epsilon-budget"] = self.epsilon
        return record


def _node_number(node_config: Mapping[str, Any], key: str, client_id: str) -> float | None:
    if key not in node_config:
        return None
    value = node_config[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"node config '{key}' of {client_id} must be a number, got {value!r}")
    return float(value)


def resolve_budget(node_config: Mapping[str, Any], config: RunConfig, client_id: str) -> ClientBudget:
    """The client's budget (see the module docstring); ConfigError names a bad value."""
    epsilon = _node_number(node_config, BUDGET_KEY, client_id)
    delta = _node_number(node_config, DELTA_KEY, client_id)
    if epsilon is not None and epsilon <= 0:
        raise ConfigError(f"node config '{BUDGET_KEY}' of {client_id} must be > 0, got {epsilon:g}")
    if delta is not None and not 0.0 < delta < 1.0:
        raise ConfigError(f"node config '{DELTA_KEY}' of {client_id} must be in (0, 1), got {delta:g}")
    delta = config.delta if delta is None else delta
    if epsilon is not None:
        return ClientBudget(epsilon, delta, "node config")
    run_budgets = parse_client_budgets(config.client_budgets)
    if client_id in run_budgets:
        return ClientBudget(run_budgets[client_id], delta, "run config client-budgets")
    if config.calibrates_noise:
        return ClientBudget(config.target_epsilon, delta, "run target-epsilon")
    return ClientBudget(math.inf, delta, "none (fixed noise multiplier)")


def ledger_directory(node_config: Mapping[str, Any], config: RunConfig, run_id: str) -> Path:
    """Where this client keeps its ledger and key (see the module docstring)."""
    if LEDGER_DIR_KEY in node_config:
        folder = node_config[LEDGER_DIR_KEY]
        if not isinstance(folder, str) or not folder:
            raise ConfigError(f"node config '{LEDGER_DIR_KEY}' must be a folder path, got {folder!r}")
        return Path(folder).expanduser()
    if config.ledger_dir:
        return Path(config.ledger_dir).expanduser()
    return Path(config.out_dir) / run_id / CLIENT_LEDGER_DIR


class ClientLedger:
    """One client's ledger, key and budget for one round of one run.

    The ledger file is opened once for the round and closed by :meth:`close` (or by
    leaving a ``with`` block), so nothing stays open between rounds; every write commits
    on its own. With DP off there is nothing to charge: no file is created.
    """

    def __init__(self, directory: Path, client_id: str, run_id: str, budget: ClientBudget,
                 config: RunConfig) -> None:
        if not SAFE_NAME.match(client_id):
            raise ConfigError(f"client id {client_id!r} cannot name a ledger file (use letters, "
                              "digits, '.', '_' and '-')")
        self.client_id = client_id
        self.run_id = run_id
        self.budget = budget
        #: The run config with this client's own delta.
        self.config = dataclasses.replace(config, delta=budget.delta)
        self.path = client_ledger_path(directory, client_id)
        self._signer: ClientSigner | None = None
        self._store: PrivacyLedger | None = None
        if config.dp:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._signer = ClientSigner.load_or_create(client_key_path(directory, client_id))
            self._store = PrivacyLedger(self.path)
            try:
                self._store.enroll(client_id, self._signer.public_key)
            except BaseException:
                self.close()
                raise

    def close(self) -> None:
        """Close the ledger file (the object is done with)."""
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> "ClientLedger":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _ledger(self) -> PrivacyLedger:
        if self._store is None:
            raise LedgerError(f"the ledger of {self.client_id} was closed")
        return self._store

    @classmethod
    def open(cls, node_config: Mapping[str, Any], config: RunConfig, client_id: str,
             round_config: Mapping[str, Any]) -> "ClientLedger":
        """The ledger of ``client_id`` for the run named in the training message."""
        run_id = str(round_config.get("run-id", "")) or "unnamed-run"
        if not SAFE_NAME.match(run_id):
            raise ConfigError(f"training message names an unusable run id {run_id!r}")
        budget = resolve_budget(node_config, config, client_id)
        return cls(ledger_directory(node_config, config, run_id), client_id, run_id, budget, config)

    def history(self) -> list[DPStep]:
        """Every sample-level DP step this client's ledger has charged, in order."""
        history: list[DPStep] = []
        for entry in self._entries():
            if entry.charge.unit == UNIT:
                charge = entry.charge
                history = merge_history(
                    history, DPStep(charge.noise_multiplier, charge.sample_rate, charge.steps)
                )
        return history

    def charge(self, outcome: LocalRoundOutcome, server_round: int) -> LedgerEntry | None:
        """Append the signed charge for a round that trained with DP; None otherwise.

        When this returns, the charge is committed to disk; only then may the update leave.
        Cumulative epsilon never shrinks: should an accountant's estimate dip below the one
        charged before in this run, the earlier (larger) value is charged and reported.
        """
        if self._signer is None or outcome.declined:
            return None
        metrics = outcome.metrics
        charged_before = self._ledger().latest_epsilon(self.client_id, self.run_id, UNIT)
        metrics["epsilon"] = max(float(metrics["epsilon"]), charged_before)
        charge = PrivacyCharge(
            run_id=self.run_id,
            round=server_round,
            client_id=self.client_id,
            unit=UNIT,
            mechanism=MECHANISM,
            noise_multiplier=float(metrics["noise-multiplier"]),
            clipping_norm=float(metrics["max-grad-norm"]),
            sample_rate=float(metrics["sample-rate"]),
            steps=int(metrics["steps"]),
            delta=float(metrics["delta"]),
            accountant=self.config.accountant,
            epsilon_after=float(metrics["epsilon"]),
            dataset_size=int(metrics["num-examples"]),
        )
        entry = self._ledger().append(charge, self._signer)
        if os.environ.get(FAULT_ENV) == "kill-after-charge":
            os.kill(os.getpid(), signal.SIGKILL)
        return entry

    def reply_fields(self, round_config: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """What the reply publishes about the ledger: the client's signed entries, its
        head, its public key and its budget (the coordinator merges and checks them).

        The entries are those the coordinator does not hold yet: the training message
        names the newest entry of this ledger it holds (``ledger-held-id``/``-seq``),
        else every entry is sent. The head is always sent, so an entry the coordinator
        claims but lacks shows as a gap in its merge, not as silence.
        """
        record: dict[str, Any] = {"client-id": self.client_id, **self.budget.to_record()}
        if self._signer is None:
            return record
        ledger = self._ledger()
        head = ledger.head()
        held = round_config or {}
        held_seq = held.get(HELD_SEQ_KEY)
        after_seq = None  # anything else than this ledger's id and a count: send everything
        if (held.get(HELD_LEDGER_KEY) == ledger.ledger_id and isinstance(held_seq, int)
                and not isinstance(held_seq, bool)):
            after_seq = held_seq
        if after_seq is not None and (head is None or after_seq >= head.seq):
            entries: list[LedgerEntry] = []  # nothing after it (and no query with a huge int)
        else:
            entries = ledger.entries(client_id=self.client_id, after_seq=after_seq)
        record["ledger-id"] = ledger.ledger_id
        record.update(
            {
                "public-key": self._signer.public_key_bytes.hex(),
                "head-seq": 0 if head is None else head.seq,
                "head-hash": "" if head is None else head.entry_hash,
                "entries": [json.dumps(e.to_dict(), sort_keys=True) for e in entries],
            }
        )
        return record

    def _entries(self) -> list[LedgerEntry]:
        if self._signer is None:
            return []
        return self._ledger().entries(client_id=self.client_id)


def with_ledger(reply: Message, outcome: LocalRoundOutcome) -> Message:
    """``reply`` carrying the ledger fields of ``outcome`` (record ``"ledger"``), if any."""
    if outcome.ledger:
        reply.content[REPLY_RECORD] = ConfigRecord(outcome.ledger)
    return reply
