"""send_and_receive: every reply that arrives, partial results at the timeout."""

from __future__ import annotations

import threading
import time

import pytest
from flwr.app import ConfigRecord, Message, RecordDict

from server import messaging
from server.messaging import send_and_receive

pytestmark = pytest.mark.usefixtures("server_identity")


class SlowGrid:
    """Answers message i after delays[i] seconds (None: never), from another thread."""

    def __init__(self, delays: list[float | None]) -> None:
        self.delays = delays
        self.replies: dict[str, Message] = {}
        self.lock = threading.Lock()

    def push_messages(self, messages):
        ids = []
        for i, message in enumerate(messages):
            message.metadata.__dict__["_message_id"] = f"m{i}"
            ids.append(f"m{i}")
            if self.delays[i] is not None:
                threading.Timer(self.delays[i], self._answer, (message, i)).start()
        return ids

    def _answer(self, message: Message, i: int) -> None:
        reply = Message(RecordDict({"r": ConfigRecord({"i": i})}), reply_to=message)
        with self.lock:
            self.replies[message.metadata.message_id] = reply

    def pull_messages(self, message_ids):
        with self.lock:
            return [self.replies.pop(i) for i in list(message_ids) if i in self.replies]


def _messages(n: int) -> list[Message]:
    return [Message(RecordDict({"c": ConfigRecord({"k": k})}), dst_node_id=k + 1,
                    message_type="train") for k in range(n)]


def test_waits_for_every_reply_without_a_timeout():
    replies = send_and_receive(SlowGrid([0.0, 0.05, 0.3]), _messages(3))
    assert sorted(int(r.content["r"]["i"]) for r in replies) == [0, 1, 2]


def test_returns_what_arrived_when_the_timeout_passes():
    started = time.monotonic()
    replies = send_and_receive(SlowGrid([0.0, None, 0.02]), _messages(3), timeout=0.5)
    assert sorted(int(r.content["r"]["i"]) for r in replies) == [0, 2]
    assert time.monotonic() - started >= 0.5


def test_a_reply_that_signals_its_landing_is_pulled_at_once(monkeypatch):
    monkeypatch.setattr(messaging, "FIRST_PULL_INTERVAL", 8.0)  # only a wake-up is in time

    class SignallingGrid(SlowGrid):
        def _answer(self, message: Message, i: int) -> None:
            super()._answer(message, i)
            messaging.REPLY_LANDED.set()

    started = time.monotonic()
    replies = send_and_receive(SignallingGrid([0.3, 0.6]), _messages(2))
    assert sorted(int(r.content["r"]["i"]) for r in replies) == [0, 1]
    assert time.monotonic() - started < 4.0
