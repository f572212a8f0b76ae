"""A small but complete run directory, written without training, for report and API tests.

Real ledgers (SQLite files, Ed25519 keys, signed charges) and a summary.json shaped like
the coordinator's: three clients; ``client-0`` has budget 1 and declines round 2.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from privacy.ledger import ClientSigner, PrivacyCharge, PrivacyLedger
from privacy.ledger.signing import public_key_id
from privacy.report.layout import CLIENT_LEDGER_DIR, MERGED_LEDGER_FILE, client_key_path, client_ledger_path

RUN_ID = "20260101-000000-digits-0000abcd"
BUDGETS = {"client-0": 1.0, "client-1": 5.0, "client-2": 5.0}
# Cumulative epsilon after each round a client trained in.
SPENT = {"client-0": {1: 0.8805}, "client-1": {1: 0.8805, 2: 1.2209}, "client-2": {1: 0.8805, 2: 1.2209}}


def charge(client_id: str, server_round: int, epsilon: float, run_id: str = RUN_ID) -> PrivacyCharge:
    """A charge like the one a digits client records for one round."""
    return PrivacyCharge(
        run_id=run_id, round=server_round, client_id=client_id, unit="sample",
        mechanism="subsampled_gaussian", noise_multiplier=2.0, clipping_norm=1.0,
        sample_rate=1 / 14, steps=28, delta=1e-5, accountant="prv", epsilon_after=epsilon,
        dataset_size=431,
    )


def make_run(runs_dir: Path, secure_aggregation: bool = True) -> Path:
    """Write the run under ``runs_dir``; returns its results directory."""
    results = runs_dir / RUN_ID
    ledgers = results / CLIENT_LEDGER_DIR
    ledgers.mkdir(parents=True)
    heads, key_ids = {}, {}
    with PrivacyLedger(results / MERGED_LEDGER_FILE) as merged:
        for client, spent in SPENT.items():
            signer = ClientSigner.load_or_create(client_key_path(ledgers, client))
            with PrivacyLedger(client_ledger_path(ledgers, client)) as own:
                own.enroll(client, signer.public_key)
                for server_round, epsilon in spent.items():
                    own.append(charge(client, server_round, epsilon), signer)
                merged.merge_from(own)
                head = own.head()
                heads[client] = {"ledger_id": head.ledger_id, "seq": head.seq, "entry_hash": head.entry_hash}
            key_ids[client] = public_key_id(signer.public_key)

    statuses = [(1, c, "trained", SPENT[c][1], "") for c in SPENT] + [
        (2, "client-0", "declined", 0.8805, "client-0 declines round 2: its epsilon would reach 1.2209, above its budget 1"),
        (2, "client-1", "trained", 1.2209, ""), (2, "client-2", "trained", 1.2209, ""),
    ]
    with open(results / "client_epsilon.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["round", "client_id", "status", "epsilon", "reason"])
        writer.writerows(statuses)

    summary = {
        "run_id": RUN_ID, "results_dir": str(results), "scenario": "digits",
        "accuracy": 0.41, "loss": 1.9, "epsilon_max": 1.2209, "delta": 1e-5, "dp": True,
        "rounds_completed": 2, "clients": 3, "seconds": 12.5,
        "stop_reason": "stopped before round 3: only 2 client(s) have privacy budget left, "
                       "fewer than min-train-clients=3",
        "config": {"scenario": "digits", "num-server-rounds": 3, "accountant": "prv",
                   "target-epsilon": 4.0, "noise-multiplier": 2.0, "delta": 1e-5, "dp": True},
        "secure_aggregation": secure_aggregation,
        "client_level_epsilon": None,
        "client_epsilon": {
            c: {"final": max(s.values()), "rounds_trained": len(s), "steps": 28 * len(s),
                "noise-multiplier": 2.0, "sample-rate": 1 / 14, "delta": 1e-5, "max-grad-norm": 1.0,
                "by_round": {str(r): e for r, e in s.items()}}
            for c, s in SPENT.items()
        },
        "rounds": [
            {"server_round": 1, "accuracy": 0.3, "loss": 2.1, "epsilon_max": 0.8805, "trained": 3,
             "declined": 0, "failed": 0, "seconds": 6.0, "train_seconds": 9.0, "val_accuracy": 0.3},
            {"server_round": 2, "accuracy": 0.41, "loss": 1.9, "epsilon_max": 1.2209, "trained": 2,
             "declined": 1, "failed": 0, "seconds": 6.5, "train_seconds": 6.0, "val_accuracy": float("nan")},
        ],
        "ledger": {"merged": MERGED_LEDGER_FILE, "heads": heads, "key_ids": key_ids,
                   "budgets": {c: {"epsilon": b, "delta": 1e-5, "source": "run config client-budgets"}
                               for c, b in BUDGETS.items()},
                   "problems": []},
    }
    if secure_aggregation:
        summary["secure_aggregation_parameters"] = {"protocol": "SecAgg+", "threshold_fraction": 0.5,
                                                    "clip_range": 8.0}
        summary["secure_aggregation_rounds"] = [
            {"server_round": 1, "cohort": 3, "threshold": 2, "degree": 2, "dropouts": {},
             "contributors": 3, "aborted": None, "clipped_coordinates": 0, "seconds": {}},
            {"server_round": 2, "cohort": 3, "threshold": 2, "degree": 2,
             "dropouts": {"setup": ["client-0"]}, "contributors": 2, "aborted": None,
             "clipped_coordinates": 0, "seconds": {}},
        ]
    # The coordinator writes NaN for a metric it could not compute; the report must cope.
    (results / "summary.json").write_text(json.dumps(summary, indent=2))
    return results


def tamper(path: Path, *statements: str | tuple[str, tuple]) -> None:
    """What an attacker with the file can do: drop the append-only triggers, rewrite rows."""
    import sqlite3

    con = sqlite3.connect(path)
    try:
        for table in ("ledger_entries", "client_keys", "ledger_meta"):
            for action in ("update", "delete"):
                con.execute(f"DROP TRIGGER IF EXISTS {table}_no_{action}")
        for statement in statements:
            sql, params = statement if isinstance(statement, tuple) else (statement, ())
            con.execute(sql, params)
        con.commit()
    finally:
        con.close()


def swap_rows(path: Path, client_id: str, first_seq: int, second_seq: int) -> None:
    """Swap the content of two of ``client_id``'s rows, keeping their positions."""
    import sqlite3

    con = sqlite3.connect(path)
    con.row_factory = sqlite3.Row
    rows = {r["seq"]: dict(r) for r in con.execute(
        "SELECT * FROM ledger_entries WHERE client_id = ? AND seq IN (?, ?)", (client_id, first_seq, second_seq))}
    con.close()
    a, b = rows[first_seq], rows[second_seq]
    columns = [c for c in a if c != "position"]
    setter = ", ".join(f"{c} = ?" for c in columns)
    # Move one row out of the way first: (ledger_id, seq) is unique.
    tamper(path,
           ("UPDATE ledger_entries SET seq = -1, client_seq = -1 WHERE position = ?", (a["position"],)),
           (f"UPDATE ledger_entries SET {setter} WHERE position = ?", (*[a[c] for c in columns], b["position"])),
           (f"UPDATE ledger_entries SET {setter} WHERE position = ?", (*[b[c] for c in columns], a["position"])))
