"""Reading the start-up phases out of Ray's timeline."""

from __future__ import annotations

import math

from simulations.startup import ACTOR_INIT, ACTOR_RUNS, DESERIALIZE, SUBMIT, startup_phases

ACTOR_RUN, ACTOR_RUN_BATCH = ACTOR_RUNS


def _span(cat: str, tid: str, start_s: float, seconds: float) -> dict:
    return {"cat": cat, "ph": "X", "tid": tid, "ts": start_s * 1e6, "dur": seconds * 1e6}


def test_each_phase_ends_when_the_slowest_actor_is_done_with_it():
    events = [
        _span(SUBMIT, "driver:01", 104.0, 0.01),
        _span(ACTOR_INIT, "worker:a", 105.0, 0.5),
        _span(ACTOR_INIT, "worker:b", 105.2, 0.5),
        _span(ACTOR_RUN, "worker:a", 106.0, 5.0),
        _span(DESERIALIZE, "worker:a", 106.0, 3.0),  # the ClientApp's imports
        _span(ACTOR_RUN_BATCH, "worker:b", 106.1, 4.0),  # several messages in one call
        _span(DESERIALIZE, "worker:b", 106.1, 3.5),
        _span(ACTOR_RUN, "worker:a", 111.5, 0.5),  # a later message: not the first reply
        _span(DESERIALIZE, "worker:a", 111.5, 0.1),
    ]
    phases = startup_phases(events, started=100.0)
    assert phases.actors == 2
    assert math.isclose(phases.actors_requested, 4.0)
    assert math.isclose(phases.actors_ready, 5.7)
    assert math.isclose(phases.app_loaded, 9.6)
    assert math.isclose(phases.first_replies, 11.0)


def test_a_timeline_without_flowers_actors_gives_no_phases():
    phases = startup_phases([{"cat": "task:execute", "ph": "X", "tid": "worker:x", "ts": 1.0}], 0.0)
    assert phases.actors == 0
    assert all(math.isnan(t) for t in (phases.actors_requested, phases.actors_ready,
                                       phases.app_loaded, phases.first_replies))


def test_an_earlier_run_on_a_shared_ray_is_not_counted():
    earlier = [_span(SUBMIT, "driver:01", 50.0, 0.01), _span(ACTOR_INIT, "worker:old", 51.0, 0.5),
               _span(ACTOR_RUN, "worker:old", 52.0, 9.0), _span(DESERIALIZE, "worker:old", 52.0, 1.0)]
    now = [_span(SUBMIT, "driver:02", 101.0, 0.01), _span(ACTOR_INIT, "worker:new", 101.5, 0.5),
           _span(ACTOR_RUN, "worker:new", 102.5, 2.0), _span(DESERIALIZE, "worker:new", 102.5, 1.5)]
    phases = startup_phases(earlier + now, started=100.0)
    assert phases.actors == 1
    assert math.isclose(phases.actors_requested, 1.0)
    assert math.isclose(phases.first_replies, 4.5)
