"""The audit report of a run, as one JSON-safe dict (schema: ``report.schema.json``).

:func:`build_report` reads the run's ``summary.json``, per-round CSVs and ledgers and
returns the report; the HTML and PDF renderings are drawn from this dict alone, so the
three formats never disagree. Epsilons come from the coordinator's merged ledger (the
clients' signed charges) where the run has one, else from ``summary.json``. Everything is
read defensively: a run written before a feature existed (secure aggregation,
client-level DP, the ledger) yields a report that says so instead of failing.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from privacy.ledger import LedgerEntry, LedgerError, PrivacyLedger
from privacy.report.integrity import IntegrityReport, verify_run
from privacy.report.layout import MERGED_LEDGER_FILE, load_summary

SCHEMA_ID = "urn:fedshield:privacy-report"
SCHEMA_VERSION = "1.0.0"

UNIT_OF_PRIVACY = {
    "unit": "sample",
    "description": (
        "One record (a patient, a customer) of one client. Each client trains with DP-SGD: "
        "Poisson sampling of its records, every record's gradient clipped to a fixed norm, "
        "Gaussian noise added to the sum. Its (epsilon, delta) bounds how much anything "
        "released (the update, and every model trained from it) can depend on any single "
        "one of its records, over every round it took part in."
    ),
}

TRUST_MODEL = [
    {"party": "coordinator (server)", "assumed": "honest but curious: runs the protocol, looks at everything it receives",
     "protection": "with secure aggregation it sees only the sum of the clients' updates; about individual records it learns only what the DP guarantee allows"},
    {"party": "other clients", "assumed": "curious",
     "protection": "they see only the global model, which is differentially private for every record"},
    {"party": "network", "assumed": "active attacker",
     "protection": "TLS on every link; only enrolled nodes may join (deployment)"},
    {"party": "report readers", "assumed": "must be authorised",
     "protection": "read-only, token-authenticated audit API; no endpoint writes the ledger"},
    {"party": "anyone with disk access later", "assumed": "may try to rewrite history",
     "protection": "the ledger is append-only and tamper-evident: hash chains and each client's Ed25519 signature on every charge"},
]

TRUST_SUMMARY = (
    "Each client keeps its own signed ledger and charges every round's privacy cost to it, "
    "on disk, before its update leaves the client. The coordinator keeps a merged copy but "
    "cannot forge, alter, reorder or drop a client's charge without verification naming the "
    "entry: every charge is signed with a key that never leaves the client, and each client's "
    "charges form their own hash chain whose newest entry the client keeps. Out of scope: a "
    "coordinator that deviates from the protocol, and poisoning by malicious clients."
)


def _number(value: Any) -> float | None:
    """A finite float, or None (NaN, inf, missing and non-numbers become None)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _int(value: Any) -> int:
    """An int from an int or a numeric string; 0 for anything else (missing, malformed)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except ValueError:
        return 0


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as handle:
            return list(csv.DictReader(handle))
    except (OSError, csv.Error, UnicodeDecodeError):
        return []


def _ledger_entries(results_dir: Path, run_id: str) -> list[LedgerEntry] | None:
    """This run's charges in the coordinator's merged copy; None without a readable one."""
    path = results_dir / MERGED_LEDGER_FILE
    if not path.exists():
        return None
    try:
        with PrivacyLedger(path, read_only=True) as ledger:
            return ledger.entries(run_id=run_id)
    except (LedgerError, SQLAlchemyError, ValueError, TypeError):
        return None  # integrity says why


def _charge_dict(entry: LedgerEntry) -> dict[str, Any]:
    c = entry.charge
    return {
        "round": c.round, "epsilon_after": c.epsilon_after, "unit": c.unit,
        "mechanism": c.mechanism, "noise_multiplier": c.noise_multiplier,
        "clipping_norm": c.clipping_norm, "sample_rate": c.sample_rate, "steps": c.steps,
        "delta": c.delta, "accountant": c.accountant, "dataset_size": c.dataset_size,
        "timestamp": c.timestamp, "seq": entry.seq, "entry_hash": entry.entry_hash,
    }


def _client_rows(
    summary: Mapping[str, Any], charges: list[LedgerEntry] | None, statuses: list[dict[str, str]],
) -> list[dict[str, Any]]:
    config = _mapping(summary.get("config"))
    from_summary = _mapping(summary.get("client_epsilon"))
    ledger = _mapping(summary.get("ledger"))
    budgets = _mapping(ledger.get("budgets"))
    by_client: dict[str, list[LedgerEntry]] = {}
    for entry in charges or []:
        if entry.charge.unit == "sample":
            by_client.setdefault(entry.charge.client_id, []).append(entry)
    in_statuses = {r["client_id"] for r in statuses if r.get("client_id")}
    names = sorted(set(from_summary) | set(by_client) | set(budgets) | in_statuses)

    rows = []
    for client in names:
        known = _mapping(from_summary.get(client))
        own = by_client.get(client, [])
        budget = _mapping(budgets.get(client))
        rounds = [
            {"round": int(r["round"]), "status": r.get("status", ""),
             "epsilon": _number(_float_or_none(r.get("epsilon"))), "reason": r.get("reason", "")}
            for r in statuses if r.get("client_id") == client and str(r.get("round", "")).isdigit()
        ]
        if own:
            final = max(e.charge.epsilon_after for e in own)
            last = own[-1].charge
            mechanism = {"name": last.mechanism, "noise_multiplier": last.noise_multiplier,
                         "clipping_norm": last.clipping_norm, "sample_rate": last.sample_rate,
                         "steps": sum(e.charge.steps for e in own), "dataset_size": last.dataset_size}
            accountant, delta = last.accountant, last.delta
            by_round = [{"round": e.charge.round, "epsilon": e.charge.epsilon_after} for e in own]
            source = "ledger"
        else:
            final = _number(known.get("final")) or 0.0
            mechanism = {"name": "subsampled_gaussian",
                         "noise_multiplier": _number(known.get("noise-multiplier")),
                         "clipping_norm": _number(known.get("max-grad-norm")),
                         "sample_rate": _number(known.get("sample-rate")),
                         "steps": _int(known.get("steps")), "dataset_size": None}
            accountant = str(config.get("accountant", "")) or None
            delta = _number(known.get("delta")) or _number(summary.get("delta"))
            by_round = [{"round": _int(k), "epsilon": _number(v) or 0.0}
                        for k, v in sorted(_mapping(known.get("by_round")).items(), key=lambda kv: _int(kv[0]))]
            source = "summary"
        budget_epsilon = _number(budget.get("epsilon"))
        rows.append({
            "client_id": client,
            "budget": {"epsilon": budget_epsilon, "delta": _number(budget.get("delta")) or delta,
                       "source": str(budget.get("source") or "not recorded")},
            "epsilon_final": final,
            "delta": delta,
            "within_budget": None if budget_epsilon is None else final <= budget_epsilon,
            "accountant": accountant,
            "mechanism": mechanism,
            "rounds_trained": len(own) if own else _int(known.get("rounds_trained")),
            "declined_rounds": [r["round"] for r in rounds if r["status"] == "declined"],
            "epsilon_by_round": by_round,
            "rounds": rounds,
            "charges": [_charge_dict(e) for e in own],
            "epsilon_source": source,
        })
    return rows


def _float_or_none(text: Any) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _secure_aggregation(summary: Mapping[str, Any]) -> dict[str, Any]:
    enabled = summary.get("secure_aggregation") is True
    parameters = summary.get("secure_aggregation_parameters")
    rounds = []
    for raw in summary.get("secure_aggregation_rounds") or []:
        r = _mapping(raw)
        dropouts = {str(stage): [str(c) for c in clients]
                    for stage, clients in _mapping(r.get("dropouts")).items() if isinstance(clients, list)}
        rounds.append({
            "round": _int(r.get("server_round")),
            "cohort": _int(r.get("cohort")),
            "threshold": _int(r.get("threshold")),
            "neighbours": _int(r.get("degree")),
            "contributors": _int(r.get("contributors")),
            "dropouts": dropouts,
            "dropout_count": sum(len(c) for c in dropouts.values()),
            "aborted": str(r["aborted"]) if r.get("aborted") else None,
        })
    return {"enabled": enabled,
            "parameters": dict(parameters) if isinstance(parameters, Mapping) else None,
            "rounds": rounds}


def _client_level(summary: Mapping[str, Any]) -> dict[str, Any] | None:
    raw = summary.get("client_level_epsilon")
    if not isinstance(raw, Mapping):
        return None
    by_round = []
    for round_id, value in sorted(_mapping(raw.get("by_round")).items(), key=lambda kv: _int(kv[0])):
        by_round.append({"round": _int(round_id), "epsilon": _number(_mapping(value).get("epsilon"))})
    return {
        "unit": "client",
        "description": "one whole client (institution): its entire update, under zero-out "
                       "adjacency; accounted by the coordinator with client subsampling, "
                       "separately from the sample-level epsilons above",
        "epsilon": _number(raw.get("epsilon")), "delta": _number(raw.get("delta")),
        "accountant": raw.get("accountant"), "noise_multiplier": _number(raw.get("noise_multiplier")),
        "clip_norm": _number(raw.get("clip_norm")), "by_round": by_round,
    }


def _published(secure: bool, client_level: bool) -> list[dict[str, str]]:
    """What left the clients in the clear, to whom, and why."""
    items = [
        {"item": "client id, round status (trained, declined, failed) and the reason for a decline",
         "to": "coordinator", "why": "to sample clients and stop sampling those out of budget"},
        {"item": "cumulative epsilon and the mechanism parameters (noise multiplier, sample rate, clipping norm, delta, steps)",
         "to": "coordinator, auditors", "why": "to account and audit the privacy spent; the sample rate 1/ceil(N/B) reveals the dataset size to within one batch"},
        {"item": "signed ledger entries (the above plus the exact dataset size and a timestamp), the ledger head, the client's public key and its budget",
         "to": "coordinator, auditors", "why": "so the coordinator keeps a verifiable copy of every charge; the exact dataset size lets an auditor check delta < 1/N"},
        {"item": "the global model after every round", "to": "all clients (and whoever they share it with)",
         "why": "the result of training; differentially private for every record"},
        {"item": "central test accuracy and loss", "to": "coordinator, auditors",
         "why": "computed by the coordinator on its own held-out test set, not on client data"},
    ]
    if secure:
        items.append({"item": "the sum of the updates, of the example counts and of the training/validation metrics; per round the cohort, threshold and dropouts",
                      "to": "coordinator", "why": "secure aggregation: no individual update, count or metric is revealed"})
    else:
        items.append({"item": "each client's model update, number of examples and training/validation metrics",
                      "to": "coordinator", "why": "plain aggregation (secure aggregation was off): protected by DP only"})
    if client_level:
        items.append({"item": "client-level epsilon of the released sums", "to": "coordinator, auditors",
                      "why": "the client-level DP layer's accounting"})
    return items


def build_report(results_dir: Path, integrity: IntegrityReport | None = None) -> dict[str, Any]:
    """The audit report of the run in ``results_dir`` (RunNotFoundError if unreadable)."""
    summary = load_summary(results_dir)
    config = _mapping(summary.get("config"))
    run_id = str(summary.get("run_id") or results_dir.name)
    integrity = integrity or verify_run(results_dir, summary)
    charges = _ledger_entries(results_dir, run_id)
    statuses = _read_csv(results_dir / "client_epsilon.csv")
    secure = _secure_aggregation(summary)
    client_level = _client_level(summary)
    rounds = [
        {"round": _int(r.get("server_round")), "accuracy": _number(r.get("accuracy")),
         "loss": _number(r.get("loss")), "epsilon_max": _number(r.get("epsilon_max")) or 0.0,
         "trained": _int(r.get("trained")), "declined": _int(r.get("declined")),
         "failed": _int(r.get("failed"))}
        for r in (summary.get("rounds") or []) if isinstance(r, Mapping)
    ]
    return {
        "schema": SCHEMA_ID,
        "schema_version": SCHEMA_VERSION,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": {
            "run_id": run_id,
            "scenario": str(summary.get("scenario", config.get("scenario", ""))),
            "dp": bool(summary.get("dp", config.get("dp", False))),
            "rounds_planned": _int(config.get("num-server-rounds")),
            "rounds_completed": _int(summary.get("rounds_completed")),
            "clients": _int(summary.get("clients")),
            "stop_reason": str(summary.get("stop_reason", "")),
            "accuracy": _number(summary.get("accuracy")),
            "loss": _number(summary.get("loss")),
            "seconds": _number(summary.get("seconds")),
        },
        "unit_of_privacy": UNIT_OF_PRIVACY,
        "trust_model": {"summary": TRUST_SUMMARY, "parties": TRUST_MODEL},
        "accounting": {
            "mechanism": "subsampled_gaussian",
            "accountant": str(config.get("accountant", "")) or None,
            "delta": _number(summary.get("delta")),
            "target_epsilon": _number(config.get("target-epsilon")),
            "noise_multiplier_fixed": _number(config.get("noise-multiplier")) or None,
            "rounding": "epsilons are rounded up (never down) to 4 decimal places",
        },
        "clients": _client_rows(summary, charges, statuses),
        "rounds": rounds,
        "client_level": client_level,
        "secure_aggregation": secure,
        "published_in_clear": _published(secure["enabled"], client_level is not None),
        "ledger_integrity": integrity.to_dict(),
    }
