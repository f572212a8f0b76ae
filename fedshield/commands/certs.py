"""``fedshield certs``: the federation's CA, the SuperLink certificate and node keys."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def command(
    out: Annotated[Path, typer.Option(help="folder for the credentials")] = Path("certs"),
    clients: Annotated[int, typer.Option(help="node key pairs named client-0 .. client-(N-1)")] = 0,
    name: Annotated[Optional[list[str]], typer.Option("--name", help="a node key pair with this name (repeatable), e.g. hospital-3")] = None,
    san: Annotated[Optional[list[str]], typer.Option("--san", help="extra DNS name or IP address of the SuperLink (repeatable); localhost and 127.0.0.1 are always in")] = None,
    days: Annotated[int, typer.Option(help="validity of the SuperLink certificate in days")] = 825,
    nodes_only: Annotated[bool, typer.Option("--nodes-only", help="only node keys (an institution making its own key; no CA, no SuperLink certificate)")] = False,
    force: Annotated[bool, typer.Option("--force", help="replace existing keys and certificates")] = False,
) -> None:
    """Create the CA, the SuperLink's TLS certificate and SuperNode authentication keys.

    Missing files are created and existing keys are kept (never overwritten without
    --force), so re-running with more clients enrols only the new ones. Private keys are
    written with mode 0600; register each nodes/<name>.pub with `flwr supernode register`.
    """
    from fedshield.cli import console, fail
    from server.credentials import CredentialsError, ensure_credentials

    if clients < 0:
        fail(f"--clients must be >= 0, got {clients}")
    names = [f"client-{i}" for i in range(clients)] + list(name or [])
    if nodes_only and not names:
        fail("--nodes-only needs --clients N or --name NAME")
    try:
        report = ensure_credentials(
            out, names, sans=san or [], days=days, force=force, nodes_only=nodes_only
        )
    except (CredentialsError, OSError) as error:
        fail(str(error))
    for path in report.created:
        console.print(f"created {path}", highlight=False, soft_wrap=True)
    for path in report.kept:
        console.print(f"kept    {path} (exists; --force replaces it)", highlight=False,
                      soft_wrap=True)
    if any(path.suffix == ".pub" for path in report.created):
        console.print(
            f"next: flwr supernode register {out}/nodes/<name>.pub <superlink-connection>",
            highlight=False, soft_wrap=True,
        )
