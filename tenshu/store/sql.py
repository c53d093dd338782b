"""SQLAlchemy plumbing shared by the store's modules: an engine from a path or a URL, SQLite's
settings, write transactions, and timestamps that come back in UTC on every database.

Everything above this module (migrations, keys, audit) is SQLAlchemy Core and portable; what is
particular to SQLite lives here, so PostgreSQL is a matter of passing a postgresql:// URL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    Select,
    and_,
    create_engine,
    event,
    or_,
    select,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.types import TypeDecorator

from tenshu.config import private_dir, private_file

# How long a writer waits for another process's write lock before "database is locked".
BUSY_TIMEOUT_MS = 5_000

_WRITE = "tenshu_write"  # execution option: this transaction is going to write


def create_engine_for(path_or_url: str | Path) -> Engine:
    """An engine for a database URL (anything with "://"), else for a SQLite file at that path,
    whose parent directory is created if needed. A SQLite file is its owner's alone (0600, as
    SQLite then makes its -wal and -shm files), and one left readable by others is tightened."""
    text = str(path_or_url)
    if "://" in text:
        url = make_url(text)
    else:
        url = URL.create("sqlite+pysqlite", database=str(Path(text).expanduser()))
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        database = Path(url.database)
        if not database.parent.exists():
            private_dir(database.parent)
        for path in (database, database.with_name(database.name + "-wal"),
                     database.with_name(database.name + "-shm")):
            if path == database or path.exists():
                private_file(path)
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Take BEGIN away from the sqlite3 module, which never emits it before DDL (so a
        # migration would not be atomic); _on_begin emits it instead.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # WAL: readers (key checks on the request path) never wait for the audit writer.
        cursor.execute("PRAGMA journal_mode = WAL")
        # In WAL mode NORMAL is still crash-safe; it only skips an fsync per commit.
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # A write transaction takes the write lock up front, where busy_timeout applies. A
        # deferred one that reads and then writes fails at once (SQLITE_BUSY) when another
        # process wrote in between.
        immediate = connection.get_execution_options().get(_WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def begin_write(engine: Engine):
    """A transaction that will write: `with begin_write(engine) as conn: ...` commits on exit,
    rolls back on an exception."""
    return engine.execution_options(**{_WRITE: True}).begin()


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC datetime on every database. SQLite has no timezones, so it stores
    naive UTC; values come back aware either way. Naive datetimes are refused, not guessed."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware one (UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def insert_many(conn: Connection, table, rows: list[dict]) -> None:
    """INSERT `rows` (dicts with the same keys) in one executemany through the driver.

    For the record writer's batches: SQLAlchemy's per-row parameter processing costs more than
    SQLite's insert itself (about 30 of 45 us per turn). Values must be what the driver takes:
    datetimes are converted here as UTCDateTime would (naive UTC text on SQLite, aware on
    PostgreSQL); everything else must already be a plain str, int, float, bool or None."""
    if not rows:
        return
    names = list(rows[0])
    convert = _sqlite_time if conn.dialect.name == "sqlite" else _utc
    values = [tuple(convert(v) if type(v) is datetime else v for v in map(row.__getitem__, names))
              for row in rows]
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    quote = conn.dialect.identifier_preparer.quote
    conn.exec_driver_sql(f"INSERT INTO {quote(table.name)} ({', '.join(map(quote, names))}) "
                         f"VALUES ({', '.join([mark] * len(names))})", values)


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: pass an aware one (UTC)")
    return value.astimezone(UTC)


def _sqlite_time(value: datetime) -> str:
    """The text SQLAlchemy's SQLite dialect writes (and reads back) for a DATETIME."""
    return _utc(value).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def page_after(conn: Connection, stmt: Select, at: Column, after: str, owner: int) -> Select | None:
    """`stmt` (newest first by `at`, then by id) continued after the row `after`, one of the
    owner's: the next page. None when `after` is not an id the owner has."""
    table = at.table
    cursor = conn.execute(select(at).where(table.c.id == after,
                                           table.c.owner_id == owner)).scalar()
    if cursor is None:
        return None
    return stmt.where(or_(at < cursor, and_(at == cursor, table.c.id < after)))
