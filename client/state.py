"""What a client remembers between rounds, kept in Flower's ``Context.state``.

Flower keeps a node's ``Context`` across the rounds of a run (in simulation and in
deployment alike), so the accountant's history lives there: every round's epsilon is
computed over every step this client ever took in the run.
"""

from __future__ import annotations

from flwr.app import ConfigRecord, RecordDict

from privacy.accounting import DPStep

HISTORY_KEY = "dp-history"
PLAN_KEY = "dp-plan"


def load_history(state: RecordDict) -> list[DPStep]:
    """The accountant history stored in ``state`` (empty before the first round)."""
    record = state.get(HISTORY_KEY)
    if record is None:
        return []
    return [
        DPStep(float(s), float(q), int(n))
        for s, q, n in zip(record["noise-multiplier"], record["sample-rate"], record["steps"])
    ]


def save_history(state: RecordDict, history: list[DPStep], plan: dict | None) -> None:
    """Store the accountant history (and the calibrated noise plan) in ``state``."""
    state[HISTORY_KEY] = ConfigRecord(
        {
            "noise-multiplier": [h.noise_multiplier for h in history],
            "sample-rate": [h.sample_rate for h in history],
            "steps": [h.steps for h in history],
        }
    )
    if plan is not None:
        state[PLAN_KEY] = ConfigRecord(plan)


def load_plan(state: RecordDict) -> dict | None:
    """The calibrated noise plan stored in ``state``, if any."""
    record = state.get(PLAN_KEY)
    return None if record is None else dict(record)
