"""What secure aggregation costs in a deployment: plain and secure runs on real processes.

    python -m simulations.bench_deployment                  # 3 clients, 5 rounds each
    python -m simulations.bench_deployment --clients 3 --rounds 5 --repeat 2

Starts the deployment test's topology on this machine (``tests/deploy/federation.py``:
one ``flower-superlink`` with TLS and SuperNode authentication, a ``flower-superexec``
for the ServerApp, one ``flower-supernode`` per client with its own data folder and key,
all on 127.0.0.1), then submits the digits scenario (DP-SGD on) with plain aggregation and
with SecAgg+, alternating, ``--repeat`` times each, and reports the steady round time
(the rounds after the first) and, for the secure runs, the seconds of each protocol stage.

Unlike the simulation, where a Message round costs the work its messages carry, a deployed
Message round also waits for the SuperNodes' polling and starts a ClientApp process per
message, so the number of Message rounds a secure round takes is what this measures.
Wall-clock timings of a whole machine: indicative, never for timed unit tests.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from rich.console import Console

from simulations.bench_report import print_table, write_json
from tests.deploy.federation import (
    Federation,
    Network,
    Processes,
    read_summary,
    start_federation,
    wait_for,
)

#: The protocol stages as ``summary.json`` names them, and their columns.
STAGES = {"share_keys": "setup s", "share_secrets": "share s",
          "collect_masked_input": "masked input s", "unmask": "unmask s"}


def run_once(federation: Federation, out: Path, rounds: int, secure: bool) -> dict:
    """One run of ``rounds`` rounds; its summary."""
    federation.submit({"scenario": "digits", "num-server-rounds": rounds, "local-epochs": 1,
                       "target-epsilon": 8.0, "dp": True, "secure-aggregation": secure,
                       "out-dir": str(out)})
    return wait_for(lambda: read_summary(out), 300 * rounds, f"the run in {out}", every=1)


def steady(values: list[float]) -> float:
    """The median after the first round (which also sets the keys up from scratch)."""
    return statistics.median(values[1:] or values)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5, help="rounds per run (>= 2)")
    parser.add_argument("--repeat", type=int, default=1, help="pairs of runs (plain, secure)")
    parser.add_argument("--json", default="benchmarks/deployment.json", help="output file")
    args = parser.parse_args(argv)
    if args.rounds < 2 or args.repeat < 1 or args.clients < 2:
        parser.error("needs --rounds >= 2, --repeat >= 1 and --clients >= 2")
    console = Console()
    root = Path(tempfile.mkdtemp(prefix="fedshield-deploy-"))
    (root / "logs").mkdir()
    processes = Processes(root / "logs")
    pairs = []
    try:
        federation = start_federation(root, [f"client-{i}" for i in range(args.clients)],
                                      Network(), processes, timeout=180)
        for i in range(args.repeat):
            pair = {}
            for secure in (False, True):
                summary = run_once(federation, root / f"runs-{i}-{int(secure)}", args.rounds,
                                   secure)
                pair["secure" if secure else "plain"] = {
                    "round_seconds": [r["seconds"] for r in summary["rounds"]],
                    "stage_seconds": [r["seconds"] for r in
                                      summary.get("secure_aggregation_rounds", [])],
                }
            pairs.append(pair)
    finally:  # the processes (each with its tree), certificates, partitions and runs
        processes.close()
        shutil.rmtree(root, ignore_errors=True)
    plain = [steady(p["plain"]["round_seconds"]) for p in pairs]
    secure = [steady(p["secure"]["round_seconds"]) for p in pairs]
    stages = {s: statistics.median(r.get(s, 0.0) for p in pairs
                                   for r in p["secure"]["stage_seconds"][1:])
              for s in STAGES}
    print_table(console, f"deployed rounds, {args.clients} clients, digits, DP-SGD on "
                f"({os.cpu_count()} cores)",
                ["plain round s", "secure round s", "overhead", *STAGES.values()],
                [[f"{statistics.median(plain):.1f}", f"{statistics.median(secure):.1f}",
                  f"{statistics.median(secure) / statistics.median(plain) - 1:+.0%}",
                  *(f"{stages[s]:.1f}" for s in STAGES)]])
    out = write_json(args.json, {"clients": args.clients, "rounds": args.rounds,
                                 "plain_round_seconds": plain, "secure_round_seconds": secure,
                                 "secure_stage_seconds": stages, "pairs": pairs})
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
