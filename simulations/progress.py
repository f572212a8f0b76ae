"""A progress bar per round showing test accuracy and the largest epsilon so far."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from server.results import RoundRecord
from task.config import RunConfig


class RoundProgress:
    """Context manager that renders one bar over the run's rounds."""

    def __init__(self, config: RunConfig, num_clients: int, console: Console, enabled: bool = True) -> None:
        self.config = config
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("[bold]{task.fields[title]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
            disable=not enabled,
        )
        dp = (f"target epsilon {config.target_epsilon:g}" if config.calibrates_noise
              else f"sigma {config.noise_multiplier:g}" if config.dp else "no DP")
        self._task = self._progress.add_task(
            "rounds", total=config.num_server_rounds,
            title=f"{config.scenario}: {num_clients} clients, {dp}",
            status="starting clients...",
        )

    def update(self, record: RoundRecord) -> None:
        eps = f"  eps max {record.epsilon_max:.3f}" if self.config.dp else ""
        declined = f"  {record.declined} declined" if record.declined else ""
        self._progress.update(
            self._task, advance=1,
            status=f"acc {record.accuracy:.3f}{eps}{declined}",
        )
        if not self.enabled:
            return
        self._progress.console.print(
            f"  round {record.server_round:>3}: accuracy {record.accuracy:.4f}  loss {record.loss:.4f}"
            f"{eps}  {record.trained} trained{declined}  {record.seconds:.1f} s",
            highlight=False,
        )

    def __enter__(self) -> RoundProgress:
        self._progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._progress.stop()
