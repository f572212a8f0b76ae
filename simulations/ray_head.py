"""A Ray head kept by a process of its own, so that many simulations can use one Ray.

``python -m simulations.ray_head CPUS`` starts Ray as :func:`simulations.cluster.start_ray`
would for a simulation, prints the address to connect to on its first line, and keeps
Ray until its standard input closes: when its parent, :func:`simulations.cluster.
shared_ray`, is done with it, or dies. Ray's worker processes inherit this process's
environment, so the parent names the shared folder and ``PYTHONPATH`` before starting it.
"""

from __future__ import annotations

import sys

import ray

from simulations.cluster import start_ray


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit() or int(argv[0]) < 1:
        print("usage: python -m simulations.ray_head CPUS", file=sys.stderr)
        return 2
    start_ray(int(argv[0]))
    print(ray.get_runtime_context().gcs_address, flush=True)
    sys.stdin.read()  # until the parent closes it
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
