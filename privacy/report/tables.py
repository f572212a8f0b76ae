"""Formatting shared by the HTML and PDF renderings, so both print the same numbers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def num(value: Any, digits: int | None = None) -> str:
    """``n/a`` for None, ``digits`` fixed decimals if given, else the shortest form."""
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.{digits}f}" if digits is not None else f"{value:g}"


def round_numbers(report: Mapping[str, Any]) -> list[int]:
    """Every round the run reached or a client reported on, in order."""
    rounds = {int(r["round"]) for r in report["rounds"]}
    for client in report["clients"]:
        rounds.update(int(r["round"]) for r in client["rounds"])
        rounds.update(int(p["round"]) for p in client["epsilon_by_round"])
    return sorted(rounds)


def epsilon_grid(report: Mapping[str, Any]) -> dict[str, dict[int, str]]:
    """client -> round -> what to print: the cumulative epsilon after that round, marked
    when the client declined or failed, ``-`` when it was not asked."""
    grid: dict[str, dict[int, str]] = {}
    for client in report["clients"]:
        status = {int(r["round"]): r for r in client["rounds"]}
        spent = {int(p["round"]): p["epsilon"] for p in client["epsilon_by_round"]}
        cells: dict[int, str] = {}
        current = 0.0
        for server_round in round_numbers(report):
            current = max(current, spent.get(server_round) or 0.0)
            state = status.get(server_round, {}).get("status")
            if server_round in spent or state == "trained":
                cells[server_round] = num(current, 4)
            elif state:
                cells[server_round] = f"{state} ({num(current, 4)})"
            else:
                cells[server_round] = "-"
        grid[client["client_id"]] = cells
    return grid


def within_budget_text(value: bool | None) -> str:
    return {True: "yes", False: "NO", None: "n/a"}[value]
