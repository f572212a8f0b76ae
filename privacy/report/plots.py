"""The report's two plots, drawn with matplotlib's object API (no pyplot global state,
so rendering is safe inside a web server's threads)."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

FIGSIZE = (7.0, 3.8)


def _epsilon_steps(client: Mapping[str, Any], last_round: int) -> tuple[list[int], list[float]]:
    """Cumulative epsilon after every round 0..last_round (flat where it did not train)."""
    spent = {int(p["round"]): float(p["epsilon"] or 0.0) for p in client["epsilon_by_round"]}
    rounds, epsilons, current = [0], [0.0], 0.0
    for server_round in range(1, last_round + 1):
        current = max(current, spent.get(server_round, current))
        rounds.append(server_round)
        epsilons.append(current)
    return rounds, epsilons


def epsilon_by_round_figure(report: Mapping[str, Any]) -> Figure:
    """Cumulative epsilon against rounds, one line per client, its budget dashed."""
    figure = Figure(figsize=FIGSIZE, layout="constrained")
    axes = figure.add_subplot()
    clients = report["clients"]
    last_round = max([report["run"]["rounds_completed"]]
                     + [int(p["round"]) for c in clients for p in c["epsilon_by_round"]])
    for index, client in enumerate(clients):
        colour = f"C{index % 10}"
        rounds, epsilons = _epsilon_steps(client, last_round)
        axes.plot(rounds, epsilons, color=colour, marker="o", markersize=3, label=client["client_id"])
        budget = client["budget"]["epsilon"]
        if budget is not None:
            axes.axhline(budget, color=colour, linestyle="--", linewidth=0.8, alpha=0.7)
    axes.set_xlabel("round")
    axes.set_ylabel("cumulative epsilon (sample level)")
    axes.set_title("Privacy spent per client (dashed: its budget)")
    axes.set_xlim(0, max(1, last_round))
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    if clients:
        axes.legend(fontsize="small", ncols=2 if len(clients) > 6 else 1)
    return figure


def accuracy_by_epsilon_figure(report: Mapping[str, Any]) -> Figure:
    """Central test accuracy after each round against the largest epsilon spent so far."""
    figure = Figure(figsize=FIGSIZE, layout="constrained")
    axes = figure.add_subplot()
    points = [(r["epsilon_max"], r["accuracy"], r["round"]) for r in report["rounds"]
              if r["accuracy"] is not None]
    if points:
        xs, ys, _ = zip(*points, strict=True)
        axes.plot(xs, ys, marker="o", color="C0")
        for x, y, label in points:
            axes.annotate(f"r{label}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    axes.set_xlabel("largest client epsilon so far (sample level)")
    axes.set_ylabel("test accuracy")
    axes.set_title("Test accuracy against privacy spent")
    axes.set_ylim(0, 1)
    axes.set_xlim(left=0)
    axes.grid(alpha=0.3)
    return figure


def report_figures(report: Mapping[str, Any]) -> dict[str, Figure]:
    """Every figure of the report by name."""
    return {
        "epsilon_by_round": epsilon_by_round_figure(report),
        "accuracy_by_epsilon": accuracy_by_epsilon_figure(report),
    }


def png_base64(figure: Figure, dpi: int = 110) -> str:
    """The figure as a base64-encoded PNG (for a data: URI)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
