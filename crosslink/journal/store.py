"""The journal's durable store: SQLAlchemy over SQLite (the default) or PostgreSQL.

Redis holds what the sync needs to run; the journal is evidence, kept where it survives and can
be queried: one SQLite file beside the links file on a single machine (the demo needs nothing
more), PostgreSQL when CROSSLINK_JOURNAL_URL names one (compose). Entries are appended under a
lock on the link's head row (PostgreSQL: SELECT ... FOR UPDATE; SQLite: BEGIN IMMEDIATE), so two
workers never give two entries one sequence; the schema is Alembic's to create and migrate, run
on open.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection, Engine

from crosslink.base.logs import register_secret
from crosslink.base.settings import Settings
from crosslink.journal.chain import Anchor, Entry, next_entry

# The SQLite file's name beside the links file, when CROSSLINK_JOURNAL_URL names no database.
SQLITE_FILE = "crosslink-journal.sqlite3"
# How long an SQLite writer waits for another's lock before failing (seconds): appends are short.
SQLITE_BUSY_S = 30.0
# Two first appends of a new link may race for sequence 1 on PostgreSQL; the loser tries again.
APPEND_ATTEMPTS = 5
MIGRATIONS = "crosslink.journal:migrations"

# The tables as the queries see them. The migrations (crosslink/journal/migrations) are snapshots
# that make them; tests/test_journal.py checks the migrated schema matches these.
metadata = sa.MetaData()
entries_table = sa.Table(
    "journal_entries", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("link", sa.String(100), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("at", sa.String(40), nullable=False),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("side", sa.String(16), nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("source_task", sa.Integer),
    sa.Column("target_task", sa.Integer),
    sa.Column("content", sa.String(64), nullable=False),
    sa.Column("rules", sa.String(64), nullable=False),
    sa.Column("prev", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("key", sa.String(300)),
    sa.UniqueConstraint("link", "seq", name="journal_entries_link_seq"),
    sa.UniqueConstraint("link", "key", name="journal_entries_link_key"),
    sa.Index("journal_entries_source_task", "link", "source_task"),
    sa.Index("journal_entries_target_task", "link", "target_task"),
)
anchors_table = sa.Table(
    "journal_anchors", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("link", sa.String(100), nullable=False, index=True),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("at", sa.String(40), nullable=False),
    sa.Column("side", sa.String(16), nullable=False),
    sa.Column("task", sa.Integer),
    sa.Column("comment", sa.Integer),
)
heads_table = sa.Table(
    "journal_heads", metadata,
    sa.Column("link", sa.String(100), primary_key=True),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)


def journal_url(settings: Settings, links_source: str | None = None) -> str:
    """The journal's database: CROSSLINK_JOURNAL_URL, else an SQLite file beside the links file
    (or in the current folder when there is none)."""
    if settings.journal_url:
        return settings.journal_url
    source = Path(links_source or settings.links_path)
    folder = source.resolve().parent if source.is_file() else Path.cwd()
    return f"sqlite:///{folder / SQLITE_FILE}"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class Journal:
    """The journals of every link in one database (URL), its schema migrated on open."""

    def __init__(self, url: str):
        self.url = sa.engine.make_url(url)
        # The URL carries the database's password (compose's CROSSLINK_JOURNAL_URL): the log
        # filter masks it wherever an error message would repeat it.
        register_secret(self.url.password)
        self.engine = _engine(url)
        self.migrate()

    def migrate(self) -> None:
        """Bring the schema to Alembic's head, one process at a time."""
        config = Config()
        config.set_main_option("script_location", MIGRATIONS)
        # Alembic says which dialect it found at INFO on every open: noise in every command's output.
        logging.getLogger("alembic").setLevel(logging.WARNING)
        with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"),
                                   {"key": zlib.crc32(b"crosslink-journal")})
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def close(self) -> None:
        self.engine.dispose()

    def append(self, link: str, *, kind: str, side: str, source: Mapping[str, Any], target: Mapping[str, Any],
               content: str, rules: str, at: str | None = None, key: str | None = None) -> Entry:
        """Seal and store the link's next entry; the stored entry. KEY names what it records: an
        entry with that key already stored is returned instead (a retried run records once)."""
        for attempt in range(APPEND_ATTEMPTS):
            try:
                with self.engine.begin() as connection:
                    head = _head(connection, link, lock=True)
                    known = _keyed(connection, link, key) if key is not None else None
                    if known is not None:
                        return known
                    entry = next_entry(head, link=link, at=at or utc_now(), kind=kind, side=side, source=source,
                                       target=target, content=content, rules=rules)
                    _store(connection, entry, new=head is None, key=key)
                    return entry
            except sa.exc.IntegrityError:
                if attempt == APPEND_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def head(self, link: str) -> tuple[int, str] | None:
        with self.engine.connect() as connection:
            return _head(connection, link, lock=False)

    def entries(self, link: str, *, side: str | None = None, task: int | None = None) -> list[Entry]:
        """LINK's entries in sequence; with SIDE and TASK, only those about that task (as the
        source of what crossed, or as its target)."""
        query = sa.select(entries_table).where(entries_table.c.link == link).order_by(entries_table.c.seq)
        if task is not None:
            query = query.where(sa.or_(
                sa.and_(entries_table.c.side == side, entries_table.c.source_task == task),
                sa.and_(entries_table.c.side != side, entries_table.c.target_task == task)))
        with self.engine.connect() as connection:
            return [_entry(row) for row in connection.execute(query).mappings()]

    def latest(self, link: str, kind: str) -> Entry | None:
        """LINK's last entry of KIND (the rules in force: "mapping version"), or None."""
        query = (sa.select(entries_table).where(entries_table.c.link == link, entries_table.c.kind == kind)
                 .order_by(entries_table.c.seq.desc()).limit(1))
        with self.engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        return _entry(row) if row else None

    def add_anchor(self, anchor: Anchor) -> bool:
        """Store ANCHOR unless the same head is already stored as anchored on its side (a retried
        anchor job records its comment once); whether it was added."""
        table = anchors_table
        same = sa.select(table.c.id).where(table.c.link == anchor.link, table.c.side == anchor.side,
                                            table.c.seq == anchor.seq, table.c.hash == anchor.hash)
        with self.engine.begin() as connection:
            if connection.execute(same).first() is not None:
                return False
            connection.execute(table.insert().values(**anchor.as_dict()))
            return True

    def anchors(self, link: str) -> list[Anchor]:
        query = sa.select(anchors_table).where(anchors_table.c.link == link).order_by(anchors_table.c.seq,
                                                                                        anchors_table.c.id)
        with self.engine.connect() as connection:
            return [Anchor(**{key: row[key] for key in ("link", "seq", "hash", "at", "side", "task", "comment")})
                    for row in connection.execute(query).mappings()]


def _engine(url: str) -> Engine:
    """An engine whose transactions serialise appends: SQLite takes its write lock when one begins."""
    if not sa.engine.make_url(url).drivername.startswith("sqlite"):
        return sa.create_engine(url, pool_pre_ping=True)
    engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_S})

    @sa.event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # pysqlite's own BEGIN is deferred: we issue ours

    @sa.event.listens_for(engine, "begin")
    def _begin_immediate(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _head(connection: Connection, link: str, *, lock: bool) -> tuple[int, str] | None:
    query = sa.select(heads_table.c.seq, heads_table.c.hash).where(heads_table.c.link == link)
    row = connection.execute(query.with_for_update() if lock else query).first()
    return (row.seq, row.hash) if row else None


def _keyed(connection: Connection, link: str, key: str) -> Entry | None:
    query = sa.select(entries_table).where(entries_table.c.link == link, entries_table.c.key == key)
    row = connection.execute(query).mappings().first()
    return _entry(row) if row else None


def _store(connection: Connection, entry: Entry, *, new: bool, key: str | None) -> None:
    connection.execute(entries_table.insert().values(
        link=entry.link, seq=entry.seq, at=entry.at, kind=entry.kind, side=entry.side,
        source=json.dumps(dict(entry.source), sort_keys=True), target=json.dumps(dict(entry.target), sort_keys=True),
        source_task=_task(entry.source), target_task=_task(entry.target), content=entry.content,
        rules=entry.rules, prev=entry.prev, hash=entry.hash, key=key))
    if new:
        connection.execute(heads_table.insert().values(link=entry.link, seq=entry.seq, hash=entry.hash))
    else:
        connection.execute(heads_table.update().where(heads_table.c.link == entry.link)
                           .values(seq=entry.seq, hash=entry.hash))


def _task(ids: Mapping[str, Any]) -> int | None:
    task = ids.get("task")
    return int(task) if task is not None else None


def _entry(row: Mapping[str, Any]) -> Entry:
    return Entry(link=row["link"], seq=row["seq"], at=row["at"], kind=row["kind"], side=row["side"],
                 source=json.loads(row["source"]), target=json.loads(row["target"]), content=row["content"],
                 rules=row["rules"], prev=row["prev"], hash=row["hash"])
