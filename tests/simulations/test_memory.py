"""The process-tree readings the benchmarks use: a child's memory and CPU are counted."""

from __future__ import annotations

import subprocess
import sys

import psutil

from simulations.memory import PeakRSS, tree_cpu_seconds, tree_rss

# Spins for about 0.6 s of CPU, holds 200 MB, then says so and waits to be told to leave.
CHILD = """
import sys, time
ballast = bytearray(200 * 2**20)
started = time.process_time()
while time.process_time() - started < 0.6:
    pass
print("ready", flush=True)
sys.stdin.readline()
"""


def test_a_childs_cpu_and_memory_count_in_the_tree_and_not_in_the_parent():
    me = psutil.Process()
    cpu_before, own_before, rss_before = tree_cpu_seconds(me), sum(me.cpu_times()[:2]), tree_rss(me)
    with PeakRSS(interval=0.05) as peak:
        child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline() == "ready\n"
            spent = tree_cpu_seconds(me) - cpu_before
            held = tree_rss(me) - rss_before
        finally:
            child.communicate("\n", timeout=30)
    assert spent >= 0.6
    assert sum(me.cpu_times()[:2]) - own_before < spent - 0.5  # the parent mostly waited
    assert held >= 200 * 2**20
    assert peak.peak >= rss_before + 200 * 2**20
