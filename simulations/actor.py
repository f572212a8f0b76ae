"""The simulation's client actor, defined outside Flower's ``flwr.simulation`` package.

Flower's Ray backend creates its actors from ``flwr.simulation.ray_transport.ray_actor.
ClientAppActor``. A Ray worker that receives that class imports its module, and with it the
whole ``flwr.simulation`` package: the simulation runner, the link state, its SQL object
store and FastAPI, none of which an actor uses. That was about 0.9 s of every actor's
start in a quiet process (1.5 s with the other actor importing beside it), before the
actor could import the ClientApp.

:class:`ClientAppActor` does what Flower's does (run the ClientApp on one message and
context, report a failure as Flower's ``ClientAppException``, leave on ``terminate``) in a
module that imports only Ray and Flower's ``ClientApp``, and runs several messages in one
call for :mod:`simulations.batching`. :func:`install` has Flower's Ray
backend create it instead, for in-process simulations (:func:`simulations.run.run_apps`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import NamedTuple

import ray
from flwr.app import Context, Message
from flwr.clientapp.client_app import ClientApp, ClientAppException, LoadClientAppError
from flwr.common.constant import ErrorCode

log = logging.getLogger(__name__)


class ClientFailure(NamedTuple):
    """A ClientApp's failure on one message, as Flower's engine reports it to the server."""

    code: int
    reason: str

    @classmethod
    def of(cls, code: int, error: BaseException) -> ClientFailure:
        """``error`` under ``code``, its reason written as Flower's worker writes it."""
        return cls(code, f"{type(error)}:<'{error}'>")


def run_jobs(
    app: ClientApp, jobs: list[tuple[Message, Context]]
) -> list[tuple[Message, Context] | ClientFailure]:
    """The ClientApp's reply and updated context for each ``(message, context)`` of
    ``jobs``, in order, as Flower's engine would give them one message at a time: a job
    whose ClientApp raised gives its :class:`ClientFailure` (its node's context stays as
    it was) and the next job runs all the same; a node's second job sees the context its
    first one left."""
    results: list[tuple[Message, Context] | ClientFailure] = []
    left: dict[int, Context] = {}
    for message, context in jobs:
        if context.node_id in left:  # a copy: a failure must not leave its changes
            context = copy.deepcopy(left[context.node_id])
        try:
            results.append((app(message=message, context=context), context))
            left[context.node_id] = context
        except Exception as ex:  # reported to the server as the ClientApp's error
            # The traceback stays here: the actor's log (on the console with --verbose).
            log.exception("the ClientApp failed on node %s", context.node_id)
            results.append(ClientFailure.of(ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                                            ClientAppException(str(ex))))
    return results


@ray.remote
class ClientAppActor:
    """A Ray actor that runs the ClientApp on the messages given to it, one at a time."""

    def __init__(self, on_actor_init_fn: Callable[[], None] | None = None) -> None:
        if on_actor_init_fn:
            on_actor_init_fn()

    def run(
        self,
        client_app_fn: Callable[[], ClientApp],
        message: Message,
        cid: str,
        context: Context,
    ) -> tuple[str, Message, Context]:
        """The ClientApp's reply to ``message`` and the updated ``context`` (as Flower's)."""
        try:
            app = client_app_fn()
            out_message = app(message=message, context=context)
        except LoadClientAppError:
            raise
        except Exception as ex:  # reported to the server as the ClientApp's error
            raise ClientAppException(str(ex)) from ex
        return cid, out_message, context

    def run_batch(
        self, client_app_fn: Callable[[], ClientApp], jobs: list[tuple[Message, Context]]
    ) -> list[tuple[Message, Context] | ClientFailure]:
        """:func:`run_jobs` with the ClientApp (for :mod:`simulations.batching`)."""
        return run_jobs(client_app_fn(), jobs)

    def terminate(self) -> None:
        """Leave the actor (Flower's pool calls this when the simulation ends)."""
        ray.actor.exit_actor()


def install() -> None:
    """Have Flower's Ray backend create :class:`ClientAppActor` (idempotent)."""
    from flwr.server.superlink.fleet.vce.backend import raybackend

    raybackend.ClientAppActor = ClientAppActor
