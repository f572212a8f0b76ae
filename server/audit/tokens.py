"""Bearer tokens of the audit service, stored only as SHA-256 hashes (SQLite via SQLAlchemy).

A token is ``<token-id>.<secret>``: a public 48-bit id (to list and revoke it) and a
256-bit secret from :mod:`secrets`. The store keeps the id, the role, a label and the
SHA-256 of the whole token, never the token itself; it is shown once, when created.
Checking a token looks its id up and compares hashes with :func:`hmac.compare_digest`
(constant time), doing the same work whether or not the id exists.

Roles: ``auditor`` reads; ``admin`` reads and issues and revokes tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import Column, MetaData, String, Table, create_engine, insert, select, update
from sqlalchemy.engine import Engine

ROLES = ("auditor", "admin")
_TOKEN = re.compile(r"^([0-9a-f]{12})\.([A-Za-z0-9_-]{43})$")
_DUMMY_HASH = hashlib.sha256(b"fedshield-audit-no-such-token").hexdigest()

_metadata = MetaData()
audit_tokens = Table(
    "audit_tokens",
    _metadata,
    Column("token_id", String(12), primary_key=True),
    Column("token_sha256", String(64), nullable=False),
    Column("role", String(16), nullable=False),
    Column("label", String(200), nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("revoked_at", String(40), nullable=True),
)


class TokenError(ValueError):
    """A bad role, label or token id (the message names it)."""


@dataclass(frozen=True)
class TokenInfo:
    """What the store knows about a token (never the token itself)."""

    token_id: str
    role: str
    label: str
    created_at: str
    revoked_at: str | None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenStore:
    """The token database (a SQLite file, created with mode 0600)."""

    def __init__(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self.path = path
        self._engine: Engine = create_engine(f"sqlite:///{path.resolve()}")
        _metadata.create_all(self._engine)

    def create(self, role: str, label: str = "") -> tuple[str, TokenInfo]:
        """A new token of ``role``: returns the token (show it once) and its info."""
        if role not in ROLES:
            raise TokenError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        label = label.strip()
        if len(label) > 200:
            raise TokenError("label must be at most 200 characters")
        token_id = secrets.token_hex(6)
        token = f"{token_id}.{secrets.token_urlsafe(32)}"
        info = TokenInfo(token_id, role, label, _now(), None)
        with self._engine.begin() as conn:
            conn.execute(insert(audit_tokens).values(
                token_id=token_id, token_sha256=_sha256(token), role=role, label=label,
                created_at=info.created_at, revoked_at=None))
        return token, info

    def authenticate(self, token: str) -> TokenInfo | None:
        """The info of a valid, unrevoked token; None for anything else."""
        match = _TOKEN.match(token or "")
        token_id = match.group(1) if match else ""
        with self._engine.connect() as conn:
            row = conn.execute(select(audit_tokens).where(audit_tokens.c.token_id == token_id)).first()
        stored = row.token_sha256 if row is not None else _DUMMY_HASH
        matches = hmac.compare_digest(_sha256(token or ""), stored)
        if row is None or not matches or row.revoked_at is not None:
            return None
        return TokenInfo(row.token_id, row.role, row.label, row.created_at, row.revoked_at)

    def revoke(self, token_id: str) -> TokenInfo:
        """Revoke a token by id (idempotent); TokenError if there is no such token."""
        with self._engine.begin() as conn:
            row = conn.execute(select(audit_tokens).where(audit_tokens.c.token_id == token_id)).first()
            if row is None:
                raise TokenError(f"no token with id {token_id!r}")
            revoked_at = row.revoked_at or _now()
            conn.execute(update(audit_tokens).where(audit_tokens.c.token_id == token_id)
                         .values(revoked_at=revoked_at))
        return TokenInfo(row.token_id, row.role, row.label, row.created_at, revoked_at)

    def list(self) -> list[TokenInfo]:
        """Every token's info, oldest first."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(audit_tokens).order_by(audit_tokens.c.created_at))
            return [TokenInfo(r.token_id, r.role, r.label, r.created_at, r.revoked_at) for r in rows]

    def close(self) -> None:
        self._engine.dispose()
