"""The statements a ledger runs every round, built once per process.

``select(...).where(...)`` builds a statement object, and SQLAlchemy then derives its
cache key, on every call: for the statements a client's ledger runs every round that was
about a quarter of its work. These are built once, with bound parameters (the names in
each comment), and executed with a mapping of values; the SQL they compile to is the same.
"""

from __future__ import annotations

from functools import cache

from sqlalchemy import Select, bindparam, insert, or_, select

from .schema import client_keys, ledger_entries, ledger_meta

_entry = ledger_entries.c

#: Every key/value fact about the ledger file.
META = select(ledger_meta.c.key, ledger_meta.c.value)
#: The enrolment row of ``client_id``: its key and the key's id among them.
ENROLMENT = select(client_keys).where(client_keys.c.client_id == bindparam("client_id"))
#: The enrolment rows of the clients ``client_ids`` and of the keys ``key_ids``.
ENROLMENTS = select(client_keys.c.client_id, client_keys.c.public_key, client_keys.c.key_id).where(
    or_(client_keys.c.client_id.in_(bindparam("client_ids", expanding=True)),
        client_keys.c.key_id.in_(bindparam("key_ids", expanding=True)))
)
#: One enrolment row.
INSERT_KEY = insert(client_keys)
#: The newest entry of ledger ``ledger_id``'s own chain.
HEAD = (
    select(_entry.seq, _entry.entry_hash)
    .where(_entry.ledger_id == bindparam("ledger_id"))
    .order_by(_entry.seq.desc())
    .limit(1)
)
#: The newest entry of ``client_id``'s chain in ledger ``ledger_id``.
CLIENT_HEAD = (
    select(_entry.client_seq, _entry.entry_hash)
    .where(_entry.ledger_id == bindparam("ledger_id"), _entry.client_id == bindparam("client_id"))
    .order_by(_entry.client_seq.desc())
    .limit(1)
)
#: The last ``epsilon_after`` charged for the same ``run_id``, ``client_id``, ``unit``,
#: ``accountant`` and ``delta``.
LAST_EPSILON_OF_SERIES = (
    select(_entry.epsilon_after)
    .where(
        _entry.run_id == bindparam("run_id"),
        _entry.client_id == bindparam("client_id"),
        _entry.unit == bindparam("unit"),
        _entry.accountant == bindparam("accountant"),
        _entry.delta == bindparam("delta"),
    )
    .order_by(_entry.position.desc())
    .limit(1)
)
#: One entry row (the columns of ``_entry_to_row``).
INSERT_ENTRY = insert(ledger_entries)


@cache
def entries_query(by_run: bool, by_client: bool, after_seq: bool) -> Select:
    """Entries in the order written, filtered by ``run_id``, ``client_id`` and
    ``seq > after_seq`` as asked."""
    query = select(ledger_entries).order_by(_entry.position)
    if by_run:
        query = query.where(_entry.run_id == bindparam("run_id"))
    if by_client:
        query = query.where(_entry.client_id == bindparam("client_id"))
    if after_seq:
        query = query.where(_entry.seq > bindparam("after_seq"))
    return query


@cache
def latest_epsilon_query(by_run: bool) -> Select:
    """The last ``epsilon_after`` of ``client_id`` for ``unit`` (in ``run_id`` if asked)."""
    query = select(_entry.epsilon_after).where(
        _entry.client_id == bindparam("client_id"), _entry.unit == bindparam("unit")
    )
    if by_run:
        query = query.where(_entry.run_id == bindparam("run_id"))
    return query.order_by(_entry.position.desc()).limit(1)
