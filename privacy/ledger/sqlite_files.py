"""Connections to SQLite ledger files: one engine per process, one pool per file.

A SQLAlchemy ``Engine`` is a dialect, a cache of compiled statements keyed by that dialect
object, and a pool of connections to one database. A simulation actor opens the ledgers
of hundreds of clients in turn, each its own file; with an engine per file, every
client's ledger compiled the same dozen statements again (about half of a new client's
ledger work). Here every ledger file of the process goes through one engine, so a
statement compiles once per process, and each open ledger has a connection pool of its
own, made from the engine's dialect as ``create_engine`` makes one (its connect
arguments, its per-connection setup, then the ledger's own). Disposing of a ledger's pool
closes its connections; the next ledger to open the file reads it afresh.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import QueuePool

#: Per-connection setup: called with each new DBAPI connection of a ledger's pool.
ConnectHook = Callable[[Any, Any], None]

_ENGINE: Engine | None = None
_ENGINE_LOCK = threading.Lock()


def shared_engine(configure: Callable[[Engine], None]) -> Engine:
    """The process's engine for SQLite ledger files (``configure`` adds its events once).

    Its own pool only ever holds the in-memory database its dialect was initialised on.
    """
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            engine = create_engine("sqlite://")
            configure(engine)
            with engine.connect():  # the dialect reads the SQLite library's version here
                pass
            _ENGINE = engine
        return _ENGINE


class SQLiteFile:
    """A pool of connections to one SQLite file, used through the shared engine.

    It offers what the ledger uses of an ``Engine``: ``url``, ``dialect``, ``connect()``
    and ``dispose()``.
    """

    def __init__(self, url: URL, engine: Engine, on_connect: ConnectHook,
                 connect_args: dict[str, Any]) -> None:
        self.url = url
        self.engine = engine
        self.dialect: Dialect = engine.dialect
        cargs, cparams = self.dialect.create_connect_args(url)
        cparams.update(connect_args)
        dialect_setup = self.dialect.on_connect_url(url)

        def open_connection() -> Any:
            return self.dialect.connect(*cargs, **cparams)

        self._pool = QueuePool(open_connection, dialect=self.dialect)
        if dialect_setup is not None:
            event.listen(self._pool, "connect", lambda dbapi_connection, _record: dialect_setup(dbapi_connection))
        event.listen(self._pool, "connect", on_connect)

    def connect(self) -> Connection:
        """A connection to the file from this pool, with the shared engine's compiled
        statements and events (DBAPI errors wrapped as SQLAlchemy's, as ``Engine.connect``)."""
        dbapi_error = self.dialect.loaded_dbapi.Error
        try:
            pooled = self._pool.connect()
        except dbapi_error as error:
            raise DBAPIError.instance(None, None, error, dbapi_error, dialect=self.dialect) from error
        return Connection(self.engine, connection=pooled)

    def dispose(self) -> None:
        """Close the pooled connections (those in use close when returned)."""
        self._pool.dispose()
