"""The audit API: read-only endpoints over the runs under one folder, bearer-token auth.

Every read endpoint needs a token of role ``auditor`` or ``admin``; the token endpoints
need ``admin``. Nothing here can write a ledger: ledgers are opened read-only
(``mode=ro``) and no route changes a run's files. OpenAPI docs are at ``/docs``.
"""

import math
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Path as PathParam, status
from fastapi.responses import HTMLResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from privacy.report.html import render_html
from privacy.report.integrity import verify_run
from privacy.report.layout import MERGED_LEDGER_FILE, SUMMARY_FILE, RunNotFoundError, list_runs, load_summary
from privacy.report.model import build_report
from privacy.report.pdf import render_pdf
from privacy.report.schema import report_schema
from server.audit.tokens import TokenError, TokenInfo, TokenStore

RUN_ID = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", description="a run id (its results directory's name)")]
CLIENT_ID = Annotated[str, PathParam(min_length=1, max_length=256, description="a client id, e.g. client-0")]
TOKEN_ID = Annotated[str, PathParam(pattern=r"^[0-9a-f]{12}$", description="the public id of a token")]

UNAUTHORISED = {401: {"description": "no bearer token, or an invalid or revoked one"}}
FORBIDDEN = {403: {"description": "the token's role may not do this"}}
NOT_FOUND = {404: {"description": "no such run (or client, or token)"}}


class RunItem(BaseModel):
    """One run in the list."""

    run_id: str
    scenario: str | None
    rounds_completed: int | None
    clients: int | None
    epsilon_max: float | None
    stop_reason: str | None
    has_ledger: bool


class TokenRequest(BaseModel):
    """A token to issue."""

    role: Literal["auditor", "admin"]
    label: str = Field(default="", max_length=200, description="who or what the token is for")


class TokenOut(BaseModel):
    """A token's public facts (never the token itself)."""

    token_id: str
    role: str
    label: str
    created_at: str
    revoked_at: str | None


class TokenCreated(TokenOut):
    """A new token: ``token`` is shown this once and stored only as a hash."""

    token: str


class Health(BaseModel):
    status: Literal["ok"]


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def _package_version() -> str:
    try:
        return version("fedshield")
    except PackageNotFoundError:
        return "0"


def create_app(runs_dir: Path, tokens: TokenStore) -> FastAPI:
    """The audit app over the runs in ``runs_dir``, authenticating against ``tokens``."""
    app = FastAPI(
        title="fedshield audit API",
        version=_package_version(),
        description="Read-only access to the privacy budgets, spend, ledger integrity and "
        "reports of federated runs. Authenticate with `Authorization: Bearer <token>`; "
        "role `auditor` reads, role `admin` also issues and revokes tokens.",
    )
    bearer = HTTPBearer(auto_error=False, description="an audit token from `fedshield audit token create`")

    def authenticated(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> TokenInfo:
        challenge = {"WWW-Authenticate": "Bearer"}
        if credentials is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer token", headers=challenge)
        info = tokens.authenticate(credentials.credentials)
        if info is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or revoked token", headers=challenge)
        return info

    def admin(info: Annotated[TokenInfo, Depends(authenticated)]) -> TokenInfo:
        if info.role != "admin":
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"role '{info.role}' may not manage tokens")
        return info

    Reader = Annotated[TokenInfo, Depends(authenticated)]
    Admin = Annotated[TokenInfo, Depends(admin)]

    def run_directory(run_id: str) -> Path:
        directory = runs_dir / run_id
        if not (directory / SUMMARY_FILE).is_file():
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no run '{run_id}'")
        return directory

    def report_of(run_id: str) -> dict[str, Any]:
        try:
            return build_report(run_directory(run_id))
        except RunNotFoundError as error:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from None

    reads = {"responses": {**UNAUTHORISED, **NOT_FOUND}}

    @app.get("/health", response_model=Health, tags=["service"])
    def health() -> dict[str, str]:
        """Liveness (no authentication, no data)."""
        return {"status": "ok"}

    @app.get("/schemas/report.json", tags=["reports"])
    def report_json_schema() -> dict[str, Any]:
        """The JSON Schema of the report (no authentication: it describes, holds no data)."""
        return report_schema()

    @app.get("/runs", response_model=list[RunItem], tags=["runs"], responses=UNAUTHORISED)
    def runs(_: Reader) -> list[dict[str, Any]]:
        """Every run under the runs folder, newest first."""
        items = []
        for directory in list_runs(runs_dir):
            try:
                summary = finite(load_summary(directory))
            except RunNotFoundError:
                continue
            items.append({
                "run_id": directory.name, "scenario": summary.get("scenario"),
                "rounds_completed": summary.get("rounds_completed"), "clients": summary.get("clients"),
                "epsilon_max": summary.get("epsilon_max"), "stop_reason": summary.get("stop_reason"),
                "has_ledger": (directory / MERGED_LEDGER_FILE).is_file(),
            })
        return items

    @app.get("/runs/{run_id}", tags=["runs"], **reads)
    def run_summary(run_id: RUN_ID, _: Reader) -> dict[str, Any]:
        """The run's summary.json."""
        try:
            return finite(load_summary(run_directory(run_id)))
        except RunNotFoundError as error:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from None

    @app.get("/runs/{run_id}/clients", tags=["budgets"], **reads)
    def clients(run_id: RUN_ID, _: Reader) -> list[dict[str, Any]]:
        """Per client: budget, epsilon spent (final and per round), delta, mechanism,
        accountant and the signed charges of this run."""
        return finite(report_of(run_id)["clients"])

    @app.get("/runs/{run_id}/clients/{client_id}", tags=["budgets"], **reads)
    def client(run_id: RUN_ID, client_id: CLIENT_ID, _: Reader) -> dict[str, Any]:
        """One client's budget and spend."""
        for row in report_of(run_id)["clients"]:
            if row["client_id"] == client_id:
                return finite(row)
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"run '{run_id}' has no client '{client_id}'")

    @app.get("/runs/{run_id}/ledger/verify", tags=["ledger"], **reads)
    def verify_ledger(run_id: RUN_ID, _: Reader) -> dict[str, Any]:
        """Verify the run's ledgers (hash chains, signatures, heads, keys); names the first bad entry."""
        directory = run_directory(run_id)
        try:
            summary = load_summary(directory)
        except RunNotFoundError as error:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from None
        return verify_run(directory, summary).to_dict()

    @app.get("/runs/{run_id}/report.json", tags=["reports"], **reads)
    def report_json(run_id: RUN_ID, _: Reader) -> dict[str, Any]:
        """The report (schema ``urn:fedshield:privacy-report``, see privacy/report/report.schema.json)."""
        return finite(report_of(run_id))

    @app.get("/runs/{run_id}/report.html", tags=["reports"], response_class=HTMLResponse, **reads)
    def report_html(run_id: RUN_ID, _: Reader) -> HTMLResponse:
        """The report as a self-contained HTML page."""
        return HTMLResponse(render_html(report_of(run_id)))

    @app.get("/runs/{run_id}/report.pdf", tags=["reports"], response_class=Response,
             responses={**UNAUTHORISED, **NOT_FOUND, 200: {"content": {"application/pdf": {}}}})
    def report_pdf(run_id: RUN_ID, _: Reader) -> Response:
        """The report as a PDF."""
        return Response(render_pdf(report_of(run_id)), media_type="application/pdf")

    @app.get("/tokens", response_model=list[TokenOut], tags=["tokens"], responses={**UNAUTHORISED, **FORBIDDEN})
    def list_tokens(_: Admin) -> list[dict[str, Any]]:
        """Every token's id, role, label and dates (admin)."""
        return [vars(info) for info in tokens.list()]

    @app.post("/tokens", response_model=TokenCreated, status_code=status.HTTP_201_CREATED, tags=["tokens"],
              responses={400: {"description": "the body is not JSON"}, **UNAUTHORISED, **FORBIDDEN})
    def create_token(request: TokenRequest, _: Admin) -> dict[str, Any]:
        """Issue a token (admin). The token is in this response only; store it safely."""
        try:
            token, info = tokens.create(request.role, request.label)
        except TokenError as error:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(error)) from None
        return {**vars(info), "token": token}

    @app.delete("/tokens/{token_id}", response_model=TokenOut, tags=["tokens"],
                responses={**UNAUTHORISED, **FORBIDDEN, **NOT_FOUND})
    def revoke_token(token_id: TOKEN_ID, _: Admin) -> dict[str, Any]:
        """Revoke a token (admin); it stops working at once."""
        try:
            return vars(tokens.revoke(token_id))
        except TokenError as error:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from None

    return app
