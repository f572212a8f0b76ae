"""Keep the objects created by the imports out of Python's garbage collector's way.

A full (generation 2) collection walks every container object the collector tracks. After
importing torch, Opacus (which brings in SciPy and SymPy), Flower and SQLAlchemy a process
holds about 500,000 of them, so each full collection stalls the process for about 0.35 s
on this project's 2-core machine, about twice per client actor in a 20-round simulation.
In a simulation the other actor then waits for it at the end of the Message round.

Those objects are modules, classes and functions that live as long as the process.
:func:`freeze_imported_objects` moves them to the collector's permanent generation
(``gc.freeze``), so later collections walk only the objects created since (tens of
thousands: the data, the model, the messages). Frozen objects are never freed, which is
what happens to them anyway.
"""

from __future__ import annotations

import gc

__all__ = ["freeze_imported_objects"]


def freeze_imported_objects() -> None:
    """Exclude every object alive now from later garbage collections. Call it once the
    process has imported what it runs, before it starts its work."""
    # No gc.collect() first: it would be the very full collection this avoids (0.35 s, on
    # the first round's path), for the few cycles the imports left behind.
    gc.freeze()
