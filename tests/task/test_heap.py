"""The apps' import-time objects are out of the garbage collector's reach (task.heap)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

HEAP_AFTER_IMPORT = """
import gc, json, sys
import {module}
tracked = len(gc.get_objects())
before = gc.get_freeze_count()
junk = [[i] for i in range(1000)]
print(json.dumps({{"frozen": before, "tracked": tracked,
                   "new_objects_tracked": len(gc.get_objects()) - tracked,
                   "frozen_after": gc.get_freeze_count()}}))
"""


@pytest.mark.parametrize("module", ["client.app", "server.app"])
def test_importing_an_app_freezes_the_objects_its_imports_created(module: str) -> None:
    out = subprocess.run([sys.executable, "-c", HEAP_AFTER_IMPORT.format(module=module)],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    heap = json.loads(out.stdout.strip().splitlines()[-1])
    # torch, Opacus, Flower: hundreds of thousands of objects, which a full collection
    # would otherwise walk every time; only what was made afterwards stays tracked.
    assert heap["frozen"] > 100_000
    assert heap["tracked"] < heap["frozen"] / 5
    # Objects made later are collected as usual.
    assert heap["new_objects_tracked"] >= 1000
    assert heap["frozen_after"] == heap["frozen"]
