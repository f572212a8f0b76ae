"""Run the fedshield command the way a user does, in a separate process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def fedshield(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m fedshield.cli ARGS`` in ``cwd``, output captured as text, no stdin."""
    return subprocess.run([sys.executable, "-m", "fedshield.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL)
