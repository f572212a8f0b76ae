"""The durable, append-only privacy ledger (SQLAlchemy over SQLite by default).

Durability: on SQLite every connection runs in WAL mode with ``synchronous=FULL``, so a
charge whose :meth:`PrivacyLedger.append` returned has been fsynced and survives a crash
of the process or of the machine. Serialisation: every write runs in a ``BEGIN
IMMEDIATE`` transaction, which takes SQLite's write lock *before* the chain head is read,
so concurrent writers (threads or processes, each with its own ``PrivacyLedger``) always
extend the chain one after another; unique constraints on ``(ledger_id, seq)`` make a
fork impossible even if that were bypassed. On other databases (e.g. PostgreSQL) the
head read takes a row lock on the ledger's meta row (``SELECT ... FOR UPDATE``).

The public API can enrol clients, append charges, import entries signed elsewhere, read
and verify. It has no way to update or delete anything.

One ledger file per client (each client appends its own signed charges to a local file)
and a coordinator's merged copy (:meth:`PrivacyLedger.merge_from`) both work: each entry
keeps the chain of the ledger it was first appended to, and verification checks every
such chain, plus every client's own chain, in the merged copy.
"""

from __future__ import annotations

import os
import secrets
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Engine, Row, create_engine, event, func, insert, select
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import DatabaseError, IntegrityError, OperationalError

from . import queries
from .errors import LedgerError
from .hashing import compute_entry_hash, signing_message
from .models import CHARGE_FIELDS, GENESIS_HASH, LedgerEntry, LedgerHead, PrivacyCharge, utc_now_iso
from .schema import (SCHEMA_VERSION, client_keys, create_schema, ledger_entries, ledger_meta,
                     schema_complete)
from .signing import Signer, load_public_key, public_key_id, raw_public_key, verify_signature
from .sqlite_files import ConnectHook, SQLiteFile, shared_engine
from .verify import BadEntry, ChainState, VerificationReport, verify_entries

_WRITE = "fedshield_ledger_write"
_BUSY_TIMEOUT_S = 30.0


def _sqlite_connection_setup(read_only: bool) -> ConnectHook:
    """WAL + synchronous=FULL on every connection (a read-only connection leaves the
    journal mode as the file has it)."""

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when and how to BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
            if not read_only:
                cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    return on_connect


def _begin_immediate_for_writes(engine: Engine) -> None:
    """BEGIN IMMEDIATE for a write transaction, BEGIN DEFERRED for a read, on SQLite."""

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN DEFERRED")


def _database_for(url: URL, read_only: bool) -> Engine | SQLiteFile:
    """What opens connections to ``url``: for a SQLite file, a pool of its own through the
    process's shared engine (:mod:`.sqlite_files`: statements compile once per process,
    not once per ledger file); else an engine of its own (an in-memory SQLite database
    lives and dies with its engine)."""
    connect_args = PrivacyLedger._connect_args(url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return SQLiteFile(url, shared_engine(_begin_immediate_for_writes),
                          _sqlite_connection_setup(read_only), connect_args)
    engine = create_engine(url, connect_args=connect_args)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_connection_setup(read_only))
        _begin_immediate_for_writes(engine)
    return engine


def _to_url(location: str | os.PathLike[str] | URL) -> URL:
    if isinstance(location, URL):
        return location
    text = os.fspath(location)
    if "://" in text:
        return make_url(text)
    return URL.create("sqlite", database=str(Path(text).expanduser().resolve()))


def _row_to_entry(row: Row[Any]) -> LedgerEntry:
    values = row._mapping
    return LedgerEntry(
        charge=PrivacyCharge(**{name: values[name] for name in CHARGE_FIELDS}),
        ledger_id=values["ledger_id"],
        seq=values["seq"],
        prev_hash=values["prev_hash"],
        client_seq=values["client_seq"],
        client_prev_hash=values["client_prev_hash"],
        signer_key_id=values["signer_key_id"],
        entry_hash=values["entry_hash"],
        signature=bytes(values["signature"]),
    )


def _entry_to_row(entry: LedgerEntry) -> dict[str, Any]:
    row = entry.charge.to_dict()
    row.update(
        ledger_id=entry.ledger_id,
        seq=entry.seq,
        prev_hash=entry.prev_hash,
        client_seq=entry.client_seq,
        client_prev_hash=entry.client_prev_hash,
        signer_key_id=entry.signer_key_id,
        entry_hash=entry.entry_hash,
        signature=entry.signature,
    )
    return row


def _continuation(
    group: Sequence[LedgerEntry],
    stored: Mapping[str, ChainState],
    present: Mapping[tuple[str, int], str],
    keys: Mapping[str, Ed25519PublicKey],
) -> list[LedgerEntry]:
    """The entries of ``group`` not stored yet, once verified as a continuation of the
    stored chains; ``LedgerError`` if one conflicts with a stored entry or would not
    verify."""
    taken: dict[tuple[str, int], str] = {}  # places this group fills
    new: list[LedgerEntry] = []
    for entry in group:
        place = (entry.ledger_id, entry.seq)
        held = present.get(place, taken.get(place))
        if held is not None:
            if held != entry.entry_hash:
                raise LedgerError(
                    f"conflict: ledger {entry.ledger_id} entry {entry.seq} differs from "
                    "the one stored here"
                )
            continue
        taken[place] = entry.entry_hash
        new.append(entry)
    if new:
        after = ChainState()
        for origin in {entry.ledger_id for entry in new}:
            after.extend(stored.get(origin, ChainState()))
        signers = {entry.charge.client_id for entry in new}
        report = verify_entries(new, {c: keys[c] for c in signers if c in keys}, after=after)
        if not report.ok:
            raise LedgerError(f"refusing to import: the result would not verify ({report.first_bad})")
    return new


class PrivacyLedger:
    """A tamper-evident, append-only record of privacy charges.

    ``location`` is a file path (SQLite) or any SQLAlchemy URL (``sqlite:///...``,
    ``postgresql://...``). Open one ``PrivacyLedger`` per process; they may share a file.
    With ``create=False`` a missing ledger is an error instead of being created. With
    ``read_only=True`` (implies ``create=False``) a SQLite file is opened with
    ``mode=ro``, so nothing, not even by accident, can be written through this object; on a
    read-only mount, where SQLite cannot create the WAL index beside a cleanly closed file,
    it is opened as ``immutable`` instead.
    """

    def __init__(
        self, location: str | os.PathLike[str] | URL, *, create: bool = True, read_only: bool = False
    ) -> None:
        url = _to_url(location)
        self._read_only = read_only
        self._batch: Connection | None = None  # the connection of an open batch()
        create = create and not read_only
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            if not create and not Path(url.database).exists():
                raise LedgerError(f"no ledger at {url.database}")
            if read_only:
                url = url.set(database=f"file:{url.database}", query={**url.query, "mode": "ro", "uri": "true"})
                try:
                    self._open(url, create)
                    return
                except OperationalError:
                    url = url.update_query_dict({"immutable": "1"})
        self._open(url, create)

    def _open(self, url: URL, create: bool) -> None:
        self._database = _database_for(url, self._read_only)
        try:
            self._ledger_id = self._initialise(create)
        except DatabaseError as error:
            self._database.dispose()
            if isinstance(error, OperationalError):
                raise  # e.g. a read-only mount: the caller may retry differently
            raise LedgerError(f"{url.database} is not a readable ledger: {error.orig}") from None
        except BaseException:
            self._database.dispose()
            raise

    @staticmethod
    def _connect_args(url: URL) -> dict[str, Any]:
        return {"timeout": _BUSY_TIMEOUT_S} if url.get_backend_name() == "sqlite" else {}

    def _initialise(self, create: bool) -> str:
        with (self._read() if self._read_only else self._write()) as conn:
            if create:
                # create_all's checks and DDL compilation cost about as much as the
                # round's charge itself, so only when something is missing.
                if not schema_complete(conn):
                    create_schema(conn)
            elif not self._database.dialect.has_table(conn, ledger_meta.name):
                raise LedgerError("the database holds no privacy ledger")
            rows = conn.execute(queries.META)
            meta = {key: value for key, value in rows}
            if not meta and self._read_only:
                raise LedgerError("the database holds no privacy ledger")
            if not meta:
                meta = {
                    "ledger_id": secrets.token_hex(16),
                    "schema_version": SCHEMA_VERSION,
                    "created_at": utc_now_iso(),
                }
                conn.execute(insert(ledger_meta), [{"key": k, "value": v} for k, v in meta.items()])
            if meta.get("schema_version") != SCHEMA_VERSION:
                raise LedgerError(
                    f"ledger schema version {meta.get('schema_version')!r} is not supported "
                    f"(expected {SCHEMA_VERSION!r})"
                )
            return meta["ledger_id"]

    # -- transactions ---------------------------------------------------------------

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Run the calls inside as one write transaction: one commit, one fsync, at the end.

        Each write inside is a savepoint of it, so a write that raises is rolled back
        alone, as it would be on its own, and the others stay; reads inside see them.
        Nothing inside is durable before the block ends; an exception that leaves the
        block rolls every write in it back. For many small writes in a row (a
        coordinator's merge of a round's replies), where a commit each would cost an
        fsync each.
        """
        if self._batch is not None:
            raise LedgerError("a batch is already open on this ledger")
        with self._write() as conn:
            self._batch = conn
            try:
                yield
            finally:
                self._batch = None

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One serialised write transaction; commits (and fsyncs) on a clean exit.
        Inside :meth:`batch`, a savepoint of the batch's transaction."""
        if self._read_only:
            raise LedgerError("this ledger was opened read-only")
        if self._batch is not None:
            with self._batch.begin_nested():
                yield self._batch
            return
        with self._database.connect() as conn:
            conn.execution_options(**{_WRITE: True})
            with conn.begin():
                if conn.dialect.name != "sqlite" and self._database.dialect.has_table(conn, ledger_meta.name):
                    conn.execute(
                        select(ledger_meta.c.key).where(ledger_meta.c.key == "ledger_id").with_for_update()
                    ).all()
                yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """One read transaction: a consistent snapshot of the ledger (inside
        :meth:`batch`, the batch's transaction, which sees its own writes)."""
        if self._batch is not None:
            yield self._batch
            return
        with self._database.connect() as conn, conn.begin():
            yield conn

    # -- identity -------------------------------------------------------------------

    @property
    def ledger_id(self) -> str:
        """Random 128-bit id of this ledger file, covered by every entry hash it chains."""
        return self._ledger_id

    def head(self) -> LedgerHead | None:
        """The last entry of this ledger's own chain (record it elsewhere as an anchor)."""
        with self._read() as conn:
            row = conn.execute(queries.HEAD, {"ledger_id": self._ledger_id}).first()
        return None if row is None else LedgerHead(self._ledger_id, row.seq, row.entry_hash)

    # -- enrolment ------------------------------------------------------------------

    def enroll(self, client_id: str, public_key: Ed25519PublicKey | bytes) -> str:
        """Register ``client_id``'s Ed25519 public key once; returns its key id.

        Enrolling the same key again is a no-op; a different key for an enrolled client,
        or a key already enrolled for another client, raises ``LedgerError``.
        """
        outcome = self.enroll_many({client_id: public_key})[client_id]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def enroll_many(
        self, keys: Mapping[str, Ed25519PublicKey | bytes]
    ) -> dict[str, str | LedgerError | ValueError]:
        """:meth:`enroll` for several clients at once, in one write transaction with one
        query for the enrolments at hand and one insert (a round of new clients).

        Returns, per client, its key id or what refused it: a ``ValueError`` (a malformed
        client id) or a ``LedgerError`` (not a public key, the client enrolled with another
        key, or the key with another client); the others are enrolled all the same.
        """
        outcomes: dict[str, str | LedgerError | ValueError] = {}
        wanted: dict[str, tuple[bytes, str]] = {}
        for client_id, public_key in keys.items():
            if not isinstance(client_id, str) or not client_id or client_id != client_id.strip():
                outcomes[client_id] = ValueError(
                    f"client_id must be a non-empty string without surrounding spaces, got {client_id!r}")
                continue
            try:
                raw = raw_public_key(public_key)
            except (LedgerError, ValueError) as error:
                outcomes[client_id] = error
                continue
            wanted[client_id] = (raw, public_key_id(raw))
        if wanted:
            with self._write() as conn:
                rows = conn.execute(queries.ENROLMENTS, {
                    "client_ids": sorted(wanted),
                    "key_ids": sorted(key_id for _, key_id in wanted.values()),
                }).all()
                enrolled = {row.client_id: (bytes(row.public_key), row.key_id) for row in rows}
                owners = {row.key_id: row.client_id for row in rows}
                new_rows = []
                for client_id, (raw, key_id) in wanted.items():
                    if client_id in enrolled:
                        held, held_id = enrolled[client_id]
                        outcomes[client_id] = key_id if held == raw else LedgerError(
                            f"client {client_id!r} is already enrolled with key {held_id[:16]}...; "
                            "re-enrolling a different key is not allowed")
                    elif key_id in owners:
                        outcomes[client_id] = LedgerError(
                            f"key {key_id[:16]}... is already enrolled for client {owners[key_id]!r}")
                    else:
                        enrolled[client_id], owners[key_id] = (raw, key_id), client_id
                        new_rows.append({"client_id": client_id, "algorithm": "ed25519",
                                         "public_key": raw, "key_id": key_id,
                                         "enrolled_at": utc_now_iso()})
                        outcomes[client_id] = key_id
                if new_rows:
                    conn.execute(queries.INSERT_KEY, new_rows)
        return {client_id: outcomes[client_id] for client_id in keys}

    def public_keys(self) -> dict[str, bytes]:
        """The enrolment registry: client id -> raw 32-byte Ed25519 public key."""
        with self._read() as conn:
            return self._registry_raw(conn)

    @staticmethod
    def _registry_raw(conn: Connection, clients: Collection[str] | None = None) -> dict[str, bytes]:
        """The registry, or the part of it for ``clients``."""
        query = select(client_keys.c.client_id, client_keys.c.public_key, client_keys.c.key_id)
        if clients is not None:
            query = query.where(client_keys.c.client_id.in_(sorted(clients)))
        rows = conn.execute(query)
        registry = {}
        for client_id, raw, key_id in rows:
            raw = bytes(raw)
            # A registry row whose key id does not match its key is ignored: its client's
            # entries then fail verification as "unknown signer".
            if len(raw) == 32 and public_key_id(raw) == key_id:
                registry[client_id] = raw
        return registry

    # -- appending ------------------------------------------------------------------

    def append(self, charge: PrivacyCharge, signer: Signer) -> LedgerEntry:
        """Chain, sign and durably record ``charge``; returns the stored entry.

        Inside one serialised transaction: checks that ``signer`` holds the key enrolled
        for ``charge.client_id``; refuses an ``epsilon_after`` lower than the last one
        recorded for the same (run, client, unit, accountant, delta), since cumulative
        epsilon cannot shrink and a smaller value would under-report (``ValueError``;
        report ``max(previous, new)`` if an accountant's estimate is not monotone);
        computes ``seq``/``prev_hash`` and ``client_seq``/``client_prev_hash`` from the
        current heads; hashes; has ``signer`` sign the hash; checks the signature; inserts
        and commits. When this returns, the charge is on disk.
        """
        if not isinstance(charge, PrivacyCharge):
            raise TypeError(f"charge must be a PrivacyCharge, got {type(charge).__name__}")
        with self._write() as conn:
            enrolled = conn.execute(queries.ENROLMENT, {"client_id": charge.client_id}).first()
            if enrolled is None:
                raise LedgerError(f"client {charge.client_id!r} is not enrolled; call enroll() first")
            if signer.public_key_id != enrolled.key_id:
                raise LedgerError(
                    f"signer key {signer.public_key_id[:16]}... is not the key enrolled for "
                    f"client {charge.client_id!r}"
                )
            self._refuse_decreasing_epsilon(conn, charge)

            head = conn.execute(queries.HEAD, {"ledger_id": self._ledger_id}).first()
            client_head = conn.execute(
                queries.CLIENT_HEAD, {"ledger_id": self._ledger_id, "client_id": charge.client_id}
            ).first()
            chain = {
                "ledger_id": self._ledger_id,
                "seq": 1 if head is None else head.seq + 1,
                "prev_hash": GENESIS_HASH if head is None else head.entry_hash,
                "client_seq": 1 if client_head is None else client_head.client_seq + 1,
                "client_prev_hash": GENESIS_HASH if client_head is None else client_head.entry_hash,
                "signer_key_id": enrolled.key_id,
            }
            entry_hash = compute_entry_hash(charge, **chain)
            signature = signer.sign(signing_message(entry_hash))
            enrolled_key = load_public_key(bytes(enrolled.public_key))
            if not verify_signature(enrolled_key, signature, signing_message(entry_hash)):
                raise LedgerError("the signer's signature does not verify under the enrolled key")
            entry = LedgerEntry(charge=charge, entry_hash=entry_hash, signature=signature, **chain)
            conn.execute(queries.INSERT_ENTRY, _entry_to_row(entry))
        return entry

    @staticmethod
    def _refuse_decreasing_epsilon(conn: Connection, charge: PrivacyCharge) -> None:
        previous = conn.execute(queries.LAST_EPSILON_OF_SERIES, {
            "run_id": charge.run_id, "client_id": charge.client_id, "unit": charge.unit,
            "accountant": charge.accountant, "delta": charge.delta,
        }).scalar()
        if previous is not None and charge.epsilon_after < previous:
            raise ValueError(
                f"epsilon_after {charge.epsilon_after!r} is lower than the {previous!r} already recorded "
                f"for client {charge.client_id!r} in run {charge.run_id!r}; cumulative epsilon cannot "
                "decrease (an accountant that forgot earlier rounds under-reports)"
            )

    # -- merging --------------------------------------------------------------------

    def import_entries(self, entries: Iterable[LedgerEntry]) -> int:
        """Add entries signed elsewhere (e.g. shipped from a client's local ledger).

        Their signers must already be enrolled here. Entries already present (same
        ledger id and seq, same hash) are skipped; a different entry at the same place
        is a conflict (``LedgerError``). The new entries must continue their chains
        without gaps: each is verified (hash, links, signature) as a continuation of the
        chains stored here, from their stored heads, before anything is written, and
        nothing is written if one does not verify. Stored entries were verified when they
        were written and are not verified again, so a round's merge costs the entries it
        adds, not the length of the clients' chains (:meth:`verify` checks everything).
        Returns the number imported.
        """
        (outcome,) = self.import_groups({"entries": list(entries)}).values()
        if isinstance(outcome, LedgerError):
            raise outcome
        return outcome

    def import_groups(self, groups: Mapping[str, Sequence[LedgerEntry]]) -> dict[str, int | LedgerError]:
        """:meth:`import_entries` for several independent groups of entries at once (a
        round's replies, one group per client), in one write transaction.

        Each group is checked as :meth:`import_entries` checks its entries, against the
        chains stored here and the groups accepted before it; a group that would not
        verify is refused alone and the others are written. The stored chains are read by
        one query and the accepted entries written by one statement, so merging a round
        costs a few statements, not a few per client. Returns, per group, the number of
        entries imported or the ``LedgerError`` that refused it.
        """
        if not any(groups.values()):
            return {name: 0 for name in groups}
        outcomes: dict[str, int | LedgerError] = {}
        with self._write() as conn:
            stored, present = self._stored_chains(
                conn, {entry.ledger_id for group in groups.values() for entry in group})
            signers = {entry.charge.client_id for group in groups.values() for entry in group}
            # Only the signers at hand: the whole registry would make a round's merge
            # quadratic in the clients (every import loading every enrolled key).
            keys = {client: load_public_key(raw)
                    for client, raw in self._registry_raw(conn, signers).items()}
            accepted: dict[str, list[LedgerEntry]] = {}
            for name, group in groups.items():
                try:
                    accepted[name] = _continuation(group, stored, present, keys)
                except LedgerError as error:
                    outcomes[name] = error
                    continue
                for entry in accepted[name]:
                    present[(entry.ledger_id, entry.seq)] = entry.entry_hash
                    stored[entry.ledger_id].add(entry.ledger_id, entry.seq, entry.charge.client_id,
                                                entry.client_seq, entry.entry_hash)
            outcomes.update(self._insert_groups(conn, accepted))
        return {name: outcomes[name] for name in groups}

    @staticmethod
    def _stored_chains(
        conn: Connection, origins: Collection[str]
    ) -> tuple[defaultdict[str, ChainState], dict[tuple[str, int], str]]:
        """The chains stored here of the ledgers ``origins``, one state per ledger, and the
        hash at every place ``(ledger id, seq)`` they hold."""
        columns = ledger_entries.c
        rows = conn.execute(
            select(columns.ledger_id, columns.seq, columns.client_id, columns.client_seq,
                   columns.entry_hash)
            .where(columns.ledger_id.in_(sorted(origins)))
            .order_by(columns.position)
        )
        stored: defaultdict[str, ChainState] = defaultdict(ChainState)
        present: dict[tuple[str, int], str] = {}
        for ledger_id, seq, client_id, client_seq, entry_hash in rows:
            stored[ledger_id].add(ledger_id, seq, client_id, client_seq, entry_hash)
            present[(ledger_id, seq)] = entry_hash
        return stored, present

    @staticmethod
    def _insert_groups(
        conn: Connection, accepted: Mapping[str, list[LedgerEntry]]
    ) -> dict[str, int | LedgerError]:
        """Write the verified groups in one statement; if it breaks a constraint, write
        none of them."""
        rows = [_entry_to_row(entry) for group in accepted.values() for entry in group]
        try:
            if rows:
                with conn.begin_nested():
                    conn.execute(insert(ledger_entries), rows)
        except IntegrityError as exc:
            refused = LedgerError(f"refusing to import: {exc.orig}")
            return {name: refused for name in accepted}
        return {name: len(group) for name, group in accepted.items()}

    def merge_from(self, other: "PrivacyLedger") -> int:
        """Enrol ``other``'s clients (same keys only) and import all of its entries."""
        for client_id, raw in other.public_keys().items():
            self.enroll(client_id, raw)
        return self.import_entries(other.entries())

    # -- reading --------------------------------------------------------------------

    def entries(
        self, run_id: str | None = None, client_id: str | None = None,
        after_seq: int | None = None,
    ) -> list[LedgerEntry]:
        """Entries in the order they were written, optionally for one run and/or client,
        and only those whose ``seq`` exceeds ``after_seq``."""
        query = queries.entries_query(run_id is not None, client_id is not None, after_seq is not None)
        values = {"run_id": run_id, "client_id": client_id, "after_seq": after_seq}
        with self._read() as conn:
            return [_row_to_entry(row) for row in conn.execute(query, values)]

    def entry_hash(self, ledger_id: str, seq: int, client_id: str) -> str | None:
        """The hash of ``client_id``'s entry ``seq`` of ledger ``ledger_id``, if held here."""
        c = ledger_entries.c
        query = select(c.entry_hash).where(
            c.ledger_id == ledger_id, c.seq == seq, c.client_id == client_id
        )
        with self._read() as conn:
            return conn.execute(query).scalar_one_or_none()

    def clients(self) -> list[str]:
        """Enrolled client ids, sorted (a client with no charge has spent epsilon 0)."""
        with self._read() as conn:
            query = select(client_keys.c.client_id).order_by(client_keys.c.client_id)
            return list(conn.execute(query).scalars())

    def runs(self) -> list[str]:
        """Run ids, in the order of their first charge."""
        c = ledger_entries.c
        with self._read() as conn:
            return list(
                conn.execute(select(c.run_id).group_by(c.run_id).order_by(func.min(c.position))).scalars()
            )

    def latest_epsilon(self, client_id: str, run_id: str | None = None, unit: str = "sample") -> float:
        """``epsilon_after`` of the client's last charge for ``unit`` (in ``run_id`` if given); 0.0 if none.

        Without ``run_id`` this is the last charge in any run; epsilons of separate runs
        over the same data are *not* composed here.
        """
        query = queries.latest_epsilon_query(run_id is not None)
        values = {"client_id": client_id, "unit": unit, "run_id": run_id}
        with self._read() as conn:
            value = conn.execute(query, values).scalar()
        return 0.0 if value is None else float(value)

    # -- verification ---------------------------------------------------------------

    def verify(
        self,
        trusted_keys: Mapping[str, Ed25519PublicKey | bytes] | None = None,
        expected_heads: Iterable[LedgerHead] = (),
    ) -> VerificationReport:
        """Check every hash, link, sequence number and signature (see :mod:`.verify`).

        ``trusted_keys`` (client id -> public key) replaces the registry stored in this
        database: pass keys obtained out of band when the file itself is not trusted.
        ``expected_heads`` are heads recorded earlier; they reveal a truncated tail.
        """
        with self._read() as conn:
            rows = conn.execute(select(ledger_entries).order_by(ledger_entries.c.position)).all()
            registry = self._registry_raw(conn) if trusted_keys is None else trusted_keys
        keys = {client: load_public_key(key) for client, key in registry.items()}

        parsed: list[LedgerEntry] = []
        unreadable: BadEntry | None = None
        for row in rows:
            try:
                parsed.append(_row_to_entry(row))
            except (ValueError, TypeError) as exc:
                unreadable = BadEntry(
                    seq=row.seq, client_id=row.client_id, round=row.round,
                    reason=f"hash mismatch: content changed (stored row is not a valid charge: {exc})",
                    ledger_id=row.ledger_id,
                )
                break
        report = verify_entries(parsed, keys, () if unreadable else expected_heads)
        if unreadable is not None and report.ok:
            return VerificationReport(ok=False, entries_checked=report.entries_checked, first_bad=unreadable)
        return report

    # -- lifecycle ------------------------------------------------------------------

    def close(self) -> None:
        """Release database connections."""
        self._database.dispose()

    def __enter__(self) -> "PrivacyLedger":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        url = self._database.url.render_as_string(hide_password=True)
        return f"PrivacyLedger({url!r}, ledger_id={self._ledger_id!r})"
