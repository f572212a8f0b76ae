"""Where a run's files are, and how a run is named on the command line or in the API.

A run's results directory (``<out-dir>/<run-id>/``, written by the coordinator) holds:

* ``summary.json``: the coordinator's summary of the run (see ``server/results.py``);
* ``ledger.sqlite``: the coordinator's merged copy of every client's signed charges;
* ``ledgers/<client-id>.sqlite`` and ``ledgers/<client-id>.key``: in simulation, each
  client's own ledger and Ed25519 key (deployed, they stay on the client's volume);
* ``report.json``, ``report.html``, ``report.pdf``: the audit report, once written.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

SUMMARY_FILE = "summary.json"
MERGED_LEDGER_FILE = "ledger.sqlite"
CLIENT_LEDGER_DIR = "ledgers"
LEDGER_SUFFIX = ".sqlite"
KEY_SUFFIX = ".key"
REPORT_FILES = {"json": "report.json", "html": "report.html", "pdf": "report.pdf"}

#: Run ids and client ids name files, so they are restricted to a safe alphabet.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class RunNotFoundError(LookupError):
    """A run (or one of its files) is missing or unreadable; the message names it."""


def client_ledger_path(directory: Path, client_id: str) -> Path:
    """``<directory>/<client-id>.sqlite``."""
    return directory / f"{client_id}{LEDGER_SUFFIX}"


def client_key_path(directory: Path, client_id: str) -> Path:
    """``<directory>/<client-id>.key``."""
    return directory / f"{client_id}{KEY_SUFFIX}"


def resolve_run(run: str, runs_dir: str | Path = "runs") -> Path:
    """The results directory of ``run``: a path to it, or a run id under ``runs_dir``."""
    candidate = Path(run).expanduser()
    if (candidate / SUMMARY_FILE).is_file():
        return candidate.resolve()
    if SAFE_NAME.match(run):
        under = Path(runs_dir).expanduser() / run
        if (under / SUMMARY_FILE).is_file():
            return under.resolve()
    if candidate.is_dir():
        raise RunNotFoundError(f"run '{run}': {candidate} has no {SUMMARY_FILE}")
    raise RunNotFoundError(
        f"run '{run}' not found: neither a results directory nor a run id under {runs_dir}"
    )


def list_runs(runs_dir: str | Path) -> list[Path]:
    """Results directories directly under ``runs_dir`` (those with a summary), newest first."""
    root = Path(runs_dir).expanduser()
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if SAFE_NAME.match(p.name) and (p / SUMMARY_FILE).is_file()]
    return sorted(runs, key=lambda p: p.name, reverse=True)


def load_summary(results_dir: Path) -> dict[str, Any]:
    """The run's summary.json as a dict; RunNotFoundError naming the file otherwise."""
    path = results_dir / SUMMARY_FILE
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunNotFoundError(f"run '{results_dir.name}': {path} is missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise RunNotFoundError(f"run '{results_dir.name}': cannot read {path}: {error}") from None
    if not isinstance(summary, dict):
        raise RunNotFoundError(f"run '{results_dir.name}': {path} does not hold a JSON object")
    return summary
