"""fedshield ServerApp: the coordinator of a federated, differentially private run."""

from __future__ import annotations

from logging import INFO

from flwr.app import Context
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from server.federation import RoundCallback, run_federation
from server.results import RoundRecord
from task.config import RunConfig, resolve_config
from task.heap import freeze_imported_objects


def log_round(record: RoundRecord) -> None:
    """Report a finished round in the log (the default when no progress bar is shown)."""
    log(
        INFO,
        "round %d: accuracy %.4f, loss %.4f, largest epsilon %.4f (%d trained, %d declined)",
        record.server_round, record.accuracy, record.loss, record.epsilon_max,
        record.trained, record.declined,
    )


def make_server_app(config: RunConfig | None = None, on_round: RoundCallback | None = None,
                    on_summary=None, population: int = 0) -> ServerApp:
    """A ServerApp running ``config`` (or, when None, its Flower run config); with
    ``population``, the number of client nodes a simulation registers, round 1 waits
    for all of them."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_config = config if config is not None else resolve_config(context.run_config)
        summary = run_federation(grid, run_config, on_round=on_round or log_round,
                                 population=population)
        if on_summary is not None:
            on_summary(summary)
        log(
            INFO,
            "run %s finished: accuracy %.4f, largest epsilon %.4f; results in %s",
            summary["run_id"], summary["accuracy"], summary["epsilon_max"],
            summary["results_dir"],
        )

    return app


app = make_server_app()
freeze_imported_objects()  # the ServerApp's process has imported what it runs
