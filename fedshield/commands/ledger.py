"""``fedshield ledger verify RUN``: is the run's privacy ledger intact?"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rich.console import Console

from fedshield.cli import fail

app = typer.Typer(help="Inspect and verify privacy ledgers.", no_args_is_help=True)

RunArgument = Annotated[str, typer.Argument(help="a run's results directory, or its run id under --runs-dir")]
RunsDirOption = Annotated[str, typer.Option(help="where run ids are looked up")]


def load_trusted_keys(path: Path) -> dict[str, bytes]:
    """``{"client-0": "<64 hex digits>", ...}``: Ed25519 public keys obtained out of band."""
    import json

    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object mapping client ids to public keys")
        keys = {str(client): bytes.fromhex(str(key)) for client, key in data.items()}
    except (OSError, ValueError, UnicodeDecodeError) as error:
        fail(f"trusted keys file {path}: {error}")
    bad = [client for client, key in keys.items() if len(key) != 32]
    if bad:
        fail(f"trusted keys file {path}: the key of {bad[0]} is not 32 bytes (64 hex digits)")
    return keys


@app.command()
def verify(
    run: RunArgument,
    runs_dir: RunsDirOption = "runs",
    trusted_keys: Annotated[
        Optional[Path], typer.Option(help="JSON file of client id -> hex Ed25519 public key, obtained out of band")
    ] = None,
) -> None:
    """Check every hash chain and signature of a run's ledgers.

    Exits 0 when intact, 1 naming the first bad entry, 2 for bad input.
    """
    from privacy.report.integrity import verify_run
    from privacy.report.layout import RunNotFoundError, load_summary, resolve_run

    keys = load_trusted_keys(trusted_keys) if trusted_keys is not None else None
    try:
        results_dir = resolve_run(run, runs_dir)
        summary = load_summary(results_dir)
    except RunNotFoundError as error:
        fail(str(error))
    report = verify_run(results_dir, summary, keys)
    if report.status == "absent":
        fail(f"run '{results_dir.name}': {report.first_problem}")
    if not report.ok:
        fail(f"run '{results_dir.name}': ledger NOT intact: {report.first_problem}", code=1)
    files = ", ".join(f"{c.file} ({c.entries} entries)" for c in report.checks)
    Console().print(
        f"[bold green]intact[/]: run '{results_dir.name}': hash chains and signatures verified "
        f"in {files}; {report.key_source}",
        highlight=False, soft_wrap=True,
    )
