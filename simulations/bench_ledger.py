"""What the privacy ledgers cost the clients and the coordinator, round after round.

    python -m simulations.bench_ledger                      # 100 clients, 30 rounds
    python -m simulations.bench_ledger --clients 10 --rounds 100
    python -m simulations.bench_ledger --population 10000 --rounds 10   # new clients each round

Each round, every client charges its real ledger (``client.ledger_charge``: signed,
fsynced) and builds its reply's ledger fields as the ClientApp does, given the head the
coordinator holds; the coordinator merges the replies into its copy
(``server.ledger_merge``), as ``run_federation`` does between rounds while every client
waits. Reported per round: a client's ledger work (open, history, charge, reply fields,
close: the median over the round's clients; in the first round every client is new and
creates its ledger file and key), the merge's wall time and the entries the replies
carried. A merge, and a reply, should cost the round's new entries, not the length of the
chains: the times should stay flat as the rounds go by. With ``--population`` larger than
``--clients`` the cohorts take turns through the population, so (as in a simulation of
10,000 clients with 100 a round) most of a round's clients are new to the coordinator and
each brings its key to enrol. Wall-clock timings: indicative.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console

from client.ledger_charge import ClientLedger
from client.local_round import LocalRoundOutcome
from server.ledger_merge import CoordinatorLedger
from server.workflow import ClientReport
from simulations.bench_report import print_table, write_json
from task.config import resolve_config


@dataclass
class LedgerRound:
    server_round: int
    client_ledger_ms: float
    merge_seconds: float
    entries_shipped: int
    reply_bytes: int


def _charged(server_round: int) -> LocalRoundOutcome:
    """A trained round's outcome as ``run_local_round`` reports it (no training here)."""
    return LocalRoundOutcome(history=[], metrics={
        "num-examples": 600, "noise-multiplier": 1.0, "max-grad-norm": 1.0,
        "sample-rate": 0.05, "steps": 20, "delta": 1e-5, "epsilon": 0.05 * server_round})


def bench_merges(clients: int, rounds: int, folder: Path,
                 population: int = 0) -> list[LedgerRound]:
    """``rounds`` rounds of ``clients`` charges, replies and one coordinator merge; round
    ``r``'s clients are the ``clients`` after round ``r - 1``'s in a ring of
    ``population`` (``clients`` when 0 or fewer)."""
    population = max(population, clients)
    config = resolve_config({"out-dir": str(folder), "num-server-rounds": rounds})
    coordinator = CoordinatorLedger(folder)
    results = []
    for server_round in range(1, rounds + 1):
        reports, client_seconds = [], []
        for seat in range(clients):
            index = ((server_round - 1) * clients + seat) % population
            client_id = f"client-{index}"
            round_config = {"run-id": "bench", "server-round": server_round,
                            **coordinator.held(client_id)}
            started = time.perf_counter()
            with ClientLedger.open({}, config, client_id, round_config) as ledger:
                ledger.history()
                ledger.charge(_charged(server_round), server_round)
                fields = ledger.reply_fields(round_config)
            client_seconds.append(time.perf_counter() - started)
            reports.append(ClientReport(index, client_id, "trained", ledger=fields))
        started = time.perf_counter()
        coordinator.receive(reports, server_round)
        merge = time.perf_counter() - started
        if coordinator.problems:
            raise RuntimeError(f"the merge refused entries: {coordinator.problems[0]}")
        shipped = [text for r in reports for text in r.ledger["entries"]]
        results.append(LedgerRound(server_round, 1000 * statistics.median(client_seconds),
                                   merge, len(shipped),
                                   sum(len(text) for text in shipped)))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--population", type=int, default=0,
                        help="clients to take turns from (default: --clients, the same every round)")
    parser.add_argument("--json", default="benchmarks/ledger.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fedshield-bench-ledger-") as folder:
        results = bench_merges(args.clients, args.rounds, Path(folder), args.population)
    console = Console()
    shown = sorted({0, 1, len(results) // 2, len(results) - 1})
    population = max(args.population, args.clients)
    print_table(console, f"the ledgers' cost, {args.clients} clients a round of {population:,}",
                ("round", "client ledger ms", "merge s", "entries shipped", "entry bytes shipped"),
                [[str(r.server_round), f"{r.client_ledger_ms:.1f}", f"{r.merge_seconds:.3f}",
                  f"{r.entries_shipped:,}", f"{r.reply_bytes:,}"]
                 for r in (results[i] for i in shown)])
    first, later = results[0], results[len(results) // 2:]
    console.print(f"a client's ledger: first round (new clients) {first.client_ledger_ms:.1f} ms, "
                  f"later half mean {statistics.fmean(r.client_ledger_ms for r in later):.1f} ms")
    console.print(f"merge: first round {first.merge_seconds:.3f} s, later half mean "
                  f"{statistics.fmean(r.merge_seconds for r in later):.3f} s")
    out = write_json(args.json, {"clients": args.clients, "population": population,
                                 "rounds": args.rounds,
                                 "results": [asdict(r) for r in results]})
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
