"""Where the time to the first round goes, read from Ray's own timeline.

Flower's simulation engine asks Ray for one client actor per core, then sends each actor
the ClientApp with its first message. Ray records, per actor, when it was constructed
and when it finished unpickling a call's arguments; unpickling the first message's
arguments is where the actor imports the ClientApp's module and with it torch, Opacus,
SQLAlchemy and the data loaders. :func:`startup_phases` reads those events from
``ray.timeline()`` (taken by the driver while Ray still runs, after the first round) and
gives, in seconds from the start of the run, when each phase had ended on the slowest
actor:

``actors requested``  Ray has started and the engine has asked it for the actors
``actors ready``      every actor's process is up and has built Flower's actor class
``app loaded``        every actor has imported the ClientApp and its dependencies
``first replies``     every actor has answered its first call, one or more messages
                      (``simulations.batching``): data, calibration, first local rounds

The first round ends after that, once the Message rounds of every sampled client are
done.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: Ray's timeline categories for the calls Flower makes on its client actors.
ACTOR_INIT = "task::ClientAppActor.__init__"
#: A call with one message (Flower's worker) or several (``simulations.batching``).
ACTOR_RUNS = ("task::ClientAppActor.run", "task::ClientAppActor.run_batch")
DESERIALIZE = "task:deserialize_arguments"
SUBMIT = "submit_task"


@dataclass(frozen=True)
class StartupPhases:
    """Seconds from the run's start at which each phase had ended on every actor."""

    actors_requested: float
    actors_ready: float
    app_loaded: float
    first_replies: float
    actors: int


def _end_us(event: Mapping[str, Any]) -> float:
    return float(event["ts"]) + float(event.get("dur", 0.0))


def startup_phases(events: Iterable[Mapping[str, Any]], started: float) -> StartupPhases:
    """The phases of :mod:`this module <simulations.startup>` in ``events`` (Chrome trace
    events from ``ray.timeline()``, timestamps in microseconds since the epoch), counted
    from ``started`` (``time.time()`` at the start of the run). A phase Ray did not record
    is ``nan``. Events from before ``started`` (earlier runs on a shared Ray) are ignored."""
    spans = [e for e in events
             if e.get("ph") == "X" and "ts" in e and float(e["ts"]) / 1e6 >= started]
    requested = [float(e["ts"]) for e in spans
                 if e.get("cat") == SUBMIT and str(e.get("tid", "")).startswith("driver")]
    ready: dict[str, float] = {}
    first_run: dict[str, Mapping[str, Any]] = {}
    for event in spans:
        worker = str(event.get("tid", ""))
        if event.get("cat") == ACTOR_INIT:
            ready[worker] = _end_us(event)
        elif event.get("cat") in ACTOR_RUNS and (
            worker not in first_run or event["ts"] < first_run[worker]["ts"]
        ):
            first_run[worker] = event
    loaded = [
        max(_end_us(e) for e in unpickled)
        for worker, run in first_run.items()
        if (unpickled := [e for e in spans if e.get("cat") == DESERIALIZE
                          and e.get("tid") == worker and run["ts"] <= e["ts"] <= _end_us(run)])
    ]

    def seconds(times: Iterable[float], pick: Any = max) -> float:
        values = list(times)
        return pick(values) / 1e6 - started if values else math.nan

    return StartupPhases(
        actors_requested=seconds(requested, min),
        actors_ready=seconds(ready.values()),
        app_loaded=seconds(loaded),
        first_replies=seconds(_end_us(run) for run in first_run.values()),
        actors=len(ready),
    )


#: Column heads of :func:`startup_row`.
STARTUP_COLUMNS = ("run", "actors requested", "actors ready", "app loaded", "first replies",
                   "first round ended", "steady round")


def startup_row(phases: StartupPhases, first_round_ended: float, steady_round: float) -> list[str]:
    """Formatted cells: each phase's end, the first round's end and a steady round (s)."""
    return [f"{t:.1f}" for t in (phases.actors_requested, phases.actors_ready,
                                 phases.app_loaded, phases.first_replies, first_round_ended)] + [
        f"{steady_round:.2f}"]
