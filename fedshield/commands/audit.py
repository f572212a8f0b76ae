"""``fedshield audit``: the read-only audit API and its bearer tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from fedshield.cli import fail

app = typer.Typer(help="The read-only audit API (FastAPI) and its tokens.", no_args_is_help=True)
token_app = typer.Typer(help="Issue, list and revoke audit API tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token")

TOKEN_DB_NAME = ".audit-tokens.sqlite"
RunsDir = Annotated[str, typer.Option(help="the folder holding the runs' results directories")]
TokenDb = Annotated[Optional[Path], typer.Option(help=f"token database [<runs-dir>/{TOKEN_DB_NAME}]")]


def open_store(runs_dir: str, token_db: Path | None):
    """The token store (created, mode 0600, on first use)."""
    from sqlalchemy.exc import SQLAlchemyError

    from server.audit.tokens import TokenStore

    path = token_db or Path(runs_dir) / TOKEN_DB_NAME
    try:
        return TokenStore(path)
    except (OSError, SQLAlchemyError) as error:
        fail(f"token database {path}: {str(error).splitlines()[0]}")


@app.command()
def serve(
    runs_dir: RunsDir = "runs",
    token_db: TokenDb = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on", min=1, max=65535)] = 8000,
) -> None:
    """Serve the audit API (OpenAPI docs at /docs) with uvicorn."""
    import uvicorn

    from server.audit.app import create_app

    if not Path(runs_dir).is_dir():
        fail(f"runs folder {runs_dir} does not exist")
    store = open_store(runs_dir, token_db)
    if not store.list():
        Console(stderr=True).print(
            "no tokens yet: create one with `fedshield audit token create --role admin`", highlight=False)
    uvicorn.run(create_app(Path(runs_dir), store), host=host, port=port, log_level="info")


@token_app.command("create")
def create(
    role: Annotated[str, typer.Option(help="auditor (read) or admin (read, issue and revoke tokens)")],
    label: Annotated[str, typer.Option(help="who or what the token is for")] = "",
    runs_dir: RunsDir = "runs",
    token_db: TokenDb = None,
) -> None:
    """Issue a token and print it once (only its SHA-256 is stored)."""
    from server.audit.tokens import TokenError

    store = open_store(runs_dir, token_db)
    try:
        token, info = store.create(role, label)
    except TokenError as error:
        fail(str(error))
    Console(stderr=True).print(
        f"token {info.token_id} (role {info.role}) created; it is shown only now:", highlight=False)
    print(token)


@token_app.command("list")
def list_tokens(runs_dir: RunsDir = "runs", token_db: TokenDb = None) -> None:
    """List tokens: id, role, label, created, revoked (never the tokens themselves)."""
    for info in open_store(runs_dir, token_db).list():
        state = f"revoked {info.revoked_at}" if info.revoked_at else "active"
        print(f"{info.token_id}  {info.role:<7}  {state:<32}  created {info.created_at}  {info.label}")


@token_app.command("revoke")
def revoke(
    token_id: Annotated[str, typer.Argument(help="the token's id (the part before the dot)")],
    runs_dir: RunsDir = "runs",
    token_db: TokenDb = None,
) -> None:
    """Revoke a token; it stops working at once."""
    from server.audit.tokens import TokenError

    try:
        info = open_store(runs_dir, token_db).revoke(token_id)
    except TokenError as error:
        fail(str(error))
    print(f"revoked {info.token_id} ({info.role}) at {info.revoked_at}")
