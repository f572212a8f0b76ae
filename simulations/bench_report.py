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


def machine() -> dict[str, Any]:
    """Cores, platform, library versions and the load average (read timings with it)."""
    import flwr
    import opacus
    import torch

    return {
        "cores": os.cpu_count(),
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
