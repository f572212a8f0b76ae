"""Database schema of the ledger (SQLAlchemy Core).

Tables:

- ``ledger_meta``: key/value facts about this ledger file (its random ``ledger_id``,
  the schema version, the creation time).
- ``client_keys``: the enrolment registry, one row per client, written once: client id,
  raw Ed25519 public key and its key id.
- ``ledger_entries``: one row per charge. ``position`` is the order in which rows were
  written to *this* database; ``(ledger_id, seq)`` is the entry's place in the chain of
  the ledger it was first appended to (the same ledger for local appends, another one for
  entries merged in from a client's local ledger); ``(ledger_id, client_id, client_seq)``
  is its place in that client's chain.

On SQLite, triggers refuse UPDATE and DELETE on all three tables, so no code path can
rewrite history by accident. They are not a security boundary (anyone with the file can
drop them); the hash chain and the signatures are.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

SCHEMA_VERSION = "1"

metadata = MetaData()

ledger_meta = Table(
    "ledger_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(256), nullable=False),
)

client_keys = Table(
    "client_keys",
    metadata,
    Column("client_id", String(256), primary_key=True),
    Column("algorithm", String(16), nullable=False),
    Column("public_key", LargeBinary(32), nullable=False),
    Column("key_id", String(64), nullable=False, unique=True),
    Column("enrolled_at", String(40), nullable=False),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    # INTEGER PRIMARY KEY is SQLite's rowid: strictly increasing with every insert.
    Column("position", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("ledger_id", String(32), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("client_seq", BigInteger, nullable=False),
    Column("client_prev_hash", String(64), nullable=False),
    # content (PrivacyCharge)
    Column("run_id", String(256), nullable=False),
    Column("round", BigInteger, nullable=False),
    Column("client_id", String(256), ForeignKey("client_keys.client_id"), nullable=False),
    Column("unit", String(16), nullable=False),
    Column("mechanism", String(64), nullable=False),
    Column("noise_multiplier", Double, nullable=False),
    Column("clipping_norm", Double, nullable=False),
    Column("sample_rate", Double, nullable=False),
    Column("steps", BigInteger, nullable=False),
    Column("delta", Double, nullable=False),
    Column("accountant", String(16), nullable=False),
    Column("epsilon_after", Double, nullable=False),
    Column("dataset_size", BigInteger, nullable=False),
    Column("timestamp", String(40), nullable=False),
    # tamper evidence
    Column("entry_hash", String(64), nullable=False),
    Column("signer_key_id", String(64), nullable=False),
    Column("signature", LargeBinary(64), nullable=False),
    UniqueConstraint("ledger_id", "seq", name="uq_ledger_entries_chain"),
    UniqueConstraint("ledger_id", "client_id", "client_seq", name="uq_ledger_entries_client_chain"),
    Index("ix_ledger_entries_client_run", "client_id", "run_id"),
    Index("ix_ledger_entries_run", "run_id"),
)

_APPEND_ONLY_TABLES = ("ledger_meta", "client_keys", "ledger_entries")
# The SQLite triggers that refuse UPDATE and DELETE: (name, statement, table).
_GUARDS = [(f"{table}_no_{action}", action.upper(), table)
           for table in _APPEND_ONLY_TABLES for action in ("update", "delete")]


def schema_complete(conn: Connection) -> bool:
    """Whether every table (and, on SQLite, every append-only trigger) exists: a few
    catalogue reads, far cheaper than :func:`create_schema`'s checks and DDL."""
    if not all(conn.dialect.has_table(conn, name) for name in metadata.tables):
        return False
    if conn.dialect.name != "sqlite":
        return True
    names = [name for name, _, _ in _GUARDS]
    placeholders = ", ".join("?" for _ in names)
    found = conn.exec_driver_sql(
        f"SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name IN ({placeholders})",
        tuple(names),
    ).scalar_one()
    return found == len(names)


def create_schema(conn: Connection) -> None:
    """Create missing tables (and, on SQLite, the append-only triggers) inside ``conn``'s transaction."""
    metadata.create_all(conn, checkfirst=True)
    if conn.dialect.name == "sqlite":
        for name, statement, table in _GUARDS:
            conn.exec_driver_sql(
                f"CREATE TRIGGER IF NOT EXISTS {name} BEFORE {statement} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
            )
