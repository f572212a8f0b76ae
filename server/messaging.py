"""One Message round on a Grid: send to each node, collect its reply, without idle waits.

Flower's ``Grid.send_and_receive`` pulls the replies at a fixed pace: every 0.1 s in
simulation and every 3 s against a SuperLink. The last reply of a round therefore waits
0.05 s or 1.5 s on average before the server sees it, once per Message round, and a round
of secure aggregation has up to four Message rounds. Here the next pull follows after
``FIRST_PULL_INTERVAL`` and the interval grows by ``BACKOFF`` while nothing arrives (up
to ``MAX_PULL_INTERVAL``), starting small again whenever replies come in. A transport
that knows when a reply has landed sets :data:`REPLY_LANDED` (the simulation engine does:
``simulations.dispatch``), and the next pull follows at once instead of at its time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from flwr.app import Message
from flwr.serverapp import Grid

FIRST_PULL_INTERVAL = 0.01
MAX_PULL_INTERVAL = 0.5
BACKOFF = 1.5
#: Set when a reply may have landed; a waiting pull wakes at once. Left unset (a Grid that
#: cannot tell), the wait is the plain backoff above.
REPLY_LANDED = threading.Event()


def send_and_receive(grid: Grid, messages: Iterable[Message], timeout: float | None = None) -> list[Message]:
    """Push ``messages``; return the replies that arrive before ``timeout`` seconds (all of
    them when ``timeout`` is None), like ``Grid.send_and_receive``."""
    pending = set(grid.push_messages(messages))
    deadline = None if timeout is None else time.monotonic() + timeout
    replies: list[Message] = []
    interval = FIRST_PULL_INTERVAL
    while pending:
        REPLY_LANDED.clear()  # before the pull: a reply landing after it wakes the wait below
        arrived = list(grid.pull_messages(pending))
        replies.extend(arrived)
        pending.difference_update(m.metadata.reply_to_message_id for m in arrived)
        if not pending or (deadline is not None and time.monotonic() >= deadline):
            break
        interval = FIRST_PULL_INTERVAL if arrived else min(interval * BACKOFF, MAX_PULL_INTERVAL)
        if deadline is not None:
            interval = min(interval, max(deadline - time.monotonic(), 0.0))
        REPLY_LANDED.wait(interval)
    return replies
