"""``fedshield report RUN``: the run's privacy audit report as JSON, HTML and PDF."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from fedshield.cli import fail


def command(
    run: Annotated[str, typer.Argument(help="a run's results directory, or its run id under --runs-dir")],
    runs_dir: Annotated[str, typer.Option(help="where run ids are looked up")] = "runs",
    out: Annotated[Optional[Path], typer.Option(help="folder for the report files [the run's results directory]")] = None,
) -> None:
    """Write the run's privacy audit report: report.json, report.html and report.pdf.

    Per client the budget and the epsilon spent, the mechanisms, plots, secure aggregation,
    what was published in the clear and whether the ledger is intact.
    """
    from privacy.report.layout import RunNotFoundError, resolve_run
    from privacy.report.writer import write_report

    try:
        results_dir = resolve_run(run, runs_dir)
        paths = write_report(results_dir, out)
    except RunNotFoundError as error:
        fail(str(error))
    except OSError as error:
        fail(f"run '{run}': cannot write the report: {error}")
    Console().print(
        f"[bold green]report[/] of run '{results_dir.name}': "
        + ", ".join(str(path) for path in paths.values()),
        highlight=False, soft_wrap=True,
    )
