"""Replies a client sends when it has no update to offer: its status, in the clear."""

from __future__ import annotations

from collections.abc import Mapping

from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from task.secure_vector import CLEAR_METRICS


def public_metrics(metrics: Mapping[str, float | int]) -> dict[str, float | int]:
    """Only the metrics a client publishes in the clear (epsilon and its mechanism)."""
    return {k: metrics[k] for k in CLEAR_METRICS if k in metrics}


def status_content(
    client_id: str,
    status: str,
    reason: str = "",
    metrics: Mapping[str, float | int] | None = None,
) -> RecordDict:
    """A reply's content when it carries only the client's status, the reason and its
    public metrics."""
    return RecordDict(
        {
            "status": ConfigRecord({"client-id": client_id, "status": status, "reason": reason}),
            "metrics": MetricRecord(public_metrics(metrics or {})),
        }
    )


def status_reply(
    msg: Message,
    client_id: str,
    status: str,
    reason: str = "",
    metrics: Mapping[str, float | int] | None = None,
) -> Message:
    """A reply to ``msg`` carrying only the client's status, the reason and its public
    metrics."""
    return Message(content=status_content(client_id, status, reason, metrics), reply_to=msg)
