"""What every benchmark writes: the machine it ran on, a table, and a JSON file."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def cpu_model() -> str:
    """The processor's name (Linux ``/proc/cpuinfo``; else what ``platform`` knows): the
    same two-core machine is not always the same processor, and ratios move with it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """Cores, processor, platform, library versions and the load average (read timings
    with it)."""
    import flwr
    import opacus
    import torch

    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "flwr": flwr.__version__,
        "opacus": opacus.__version__,
        "load_average": list(os.getloadavg()),
    }


def write_json(path: str | Path, payload: dict[str, Any]) -> Path:
    """``payload`` with the machine and the date, as indented JSON at ``path``."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {"machine": machine(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                **payload}
    out.write_text(json.dumps(document, indent=2) + "\n")
    return out


def print_table(console: Console, title: str, columns: Sequence[str],
                rows: Sequence[Sequence[str]]) -> None:
    """A right-aligned table of already formatted cells."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
