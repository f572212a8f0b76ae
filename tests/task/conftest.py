"""Fixtures for the task package tests.

The ``realdata`` marker is registered in pyproject.toml ([tool.pytest.ini_options]).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_ROOT = Path(os.environ.get("FEDSHIELD_DATA_ROOT", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared real-data folder; skips the test when it is absent."""
    if not DATA_ROOT.is_dir():
        pytest.skip(
            f"real data folder {DATA_ROOT} is absent: set FEDSHIELD_DATA_ROOT to the "
            "folder holding pneumoniamnist/, mnist/ and cifar10/"
        )
    return DATA_ROOT
