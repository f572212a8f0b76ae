"""A run's results directory: summary.json, per-round CSV, per-client epsilon, model.

Layout of ``<out-dir>/<run-id>/``:

* ``summary.json``: final ``accuracy``, ``loss``, ``epsilon_max``, ``delta``,
  ``rounds_completed``, ``clients``, ``seconds``, ``secure_aggregation``, ``stop_reason``
  and the full ``config``;
* ``rounds.csv``: one row per round (accuracy, loss, largest epsilon, clients that
  trained/declined/failed, wall time, summed local-training time);
* ``client_epsilon.csv``: one row per client per round (status, cumulative epsilon);
* ``model.pt``: the final global weights (a torch state dict).
"""

from __future__ import annotations

import csv
import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from server.workflow import ClientReport


@dataclass
class RoundRecord:
    """What the server learned in one round."""

    server_round: int
    accuracy: float
    loss: float
    epsilon_max: float
    trained: int
    declined: int
    failed: int
    seconds: float
    train_seconds: float
    val_accuracy: float
    reports: list[ClientReport] = field(default_factory=list)


def new_run_id(scenario: str) -> str:
    """A sortable, unique run id: UTC time, scenario and 4 random bytes."""
    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{scenario}-{secrets.token_hex(4)}"


class RunResults:
    """Writes a run's results as it goes, so a crash keeps every finished round."""

    ROUND_FIELDS = (
        "round", "accuracy", "loss", "epsilon_max", "trained", "declined", "failed",
        "seconds", "train_seconds", "val_accuracy",
    )
    CLIENT_FIELDS = ("round", "client_id", "status", "epsilon", "reason")

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=False)
        self._write_header("rounds.csv", self.ROUND_FIELDS)
        self._write_header("client_epsilon.csv", self.CLIENT_FIELDS)

    def _write_header(self, name: str, header: tuple[str, ...]) -> None:
        with open(self.directory / name, "w", newline="") as f:
            csv.writer(f).writerow(header)

    def _append(self, name: str, rows: list[list]) -> None:
        with open(self.directory / name, "a", newline="") as f:
            csv.writer(f).writerows(rows)

    def record_round(self, record: RoundRecord) -> None:
        """Append one round to rounds.csv and client_epsilon.csv."""
        self._append(
            "rounds.csv",
            [[record.server_round, f"{record.accuracy:.6f}", f"{record.loss:.6f}",
              f"{record.epsilon_max:.4f}", record.trained, record.declined, record.failed,
              f"{record.seconds:.3f}", f"{record.train_seconds:.3f}",
              f"{record.val_accuracy:.6f}"]],
        )
        self._append(
            "client_epsilon.csv",
            [[record.server_round, r.client_id, r.status,
              "" if r.epsilon is None else f"{r.epsilon:.4f}", r.reason]
             for r in sorted(record.reports, key=lambda r: r.client_id)],
        )

    def save_model(self, weights: dict[str, np.ndarray]) -> Path:
        path = self.directory / "model.pt"
        torch.save({k: torch.from_numpy(np.array(v)) for k, v in weights.items()}, path)
        return path

    def write_summary(self, summary: dict) -> Path:
        path = self.directory / "summary.json"
        path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        return path


def round_record_dict(record: RoundRecord) -> dict:
    """A round record without its per-client reports (for summaries)."""
    data = asdict(record)
    data.pop("reports")
    return data
