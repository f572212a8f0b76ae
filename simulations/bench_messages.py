"""What a Message round costs by itself: Flower's simulation engine and Ray, no client work.

    python -m simulations.bench_messages                    # 100 clients
    python -m simulations.bench_messages --clients 10 50 100 --rounds 4

A ClientApp that answers at once receives one Message per client per round, through the
same engine, dispatch (:mod:`simulations.dispatch`), Ray settings
(:mod:`simulations.cluster`) and reply collection (:func:`server.messaging.send_and_receive`)
as a real run, with an empty payload and with a payload the size of the seed's CNN
(250 KB). Secure aggregation adds three such rounds to a plain one, so three times the
empty round is the least it can add, whatever the protocol does. The first round of each
simulation (actor start-up) is left out of the mean. Wall-clock timings: indicative.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import asdict, dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from rich.console import Console

from server.federation import wait_for_nodes
from server.messaging import send_and_receive
from simulations.bench_report import print_table, write_json
from simulations.run import run_apps

#: Payload sizes in bytes: nothing, and about the seed CNN's parameters in float32.
PAYLOADS = (0, 250_000)

noop_client = ClientApp()


@noop_client.train()
def answer(msg: Message, context: Context) -> Message:
    """Reply at once, with nothing of the message's payload."""
    return Message(content=RecordDict({"status": ConfigRecord({"ok": True})}), reply_to=msg)


@dataclass
class MessageRoundResult:
    clients: int
    payload_bytes: int
    rounds: int
    round_seconds: float
    per_message_ms: float


def _content(payload_bytes: int) -> RecordDict:
    content = RecordDict({"config": ConfigRecord({"bench": True})})
    if payload_bytes:
        content["arrays"] = ArrayRecord({"x": Array(np.zeros(payload_bytes // 4, np.float32))})
    return content


def bench_message_rounds(clients: int, rounds: int) -> list[MessageRoundResult]:
    """``rounds`` + 1 Message rounds per payload over ``clients`` no-op clients."""
    timings: dict[int, list[float]] = {p: [] for p in PAYLOADS}
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        nodes = wait_for_nodes(grid, clients, timeout=120)  # registered as the engine starts
        for payload in PAYLOADS:
            for _ in range(rounds + 1):
                messages = [Message(content=_content(payload), dst_node_id=node,
                                    message_type="train") for node in nodes]
                started = time.perf_counter()
                send_and_receive(grid, messages)
                timings[payload].append(time.perf_counter() - started)

    run_apps(server, noop_client, clients)
    results = []
    for payload, seconds in timings.items():
        steady = statistics.fmean(seconds[1:])
        results.append(MessageRoundResult(clients, payload, rounds, steady,
                                          1000 * steady / clients))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[100])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--json", default="benchmarks/messages.json")
    args = parser.parse_args(argv)
    console = Console()
    results = [r for n in args.clients for r in bench_message_rounds(n, args.rounds)]
    cores = os.cpu_count() or 1
    print_table(console, f"a Message round with no client work ({cores} cores)",
                ("clients", "payload", "round s", "ms per message"),
                [[str(r.clients), f"{r.payload_bytes:,} B", f"{r.round_seconds:.3f}",
                  f"{r.per_message_ms:.2f}"] for r in results])
    out = write_json(args.json, {"results": [asdict(r) for r in results]})
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
