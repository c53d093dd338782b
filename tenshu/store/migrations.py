"""The state database's schema, as ordered, named migrations (simonw/llm's pattern).

Each migration is a function of a connection, applied once, in its own transaction, and
recorded by name in `_migrations`. Opening the store runs `migrate`, which applies the pending
ones. A migration is never edited once released: a schema change is a new function appended to
MIGRATIONS. So each migration declares the tables it creates as they were at that point, rather
than sharing definitions with the code that queries them (keys.py, audit.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    false,
    insert,
    select,
    text,
)
from sqlalchemy.schema import CreateColumn

from tenshu.store.sql import UTCDateTime, begin_write, utcnow

Migration = Callable[[Connection], None]

_applied = Table(
    "_migrations", MetaData(),
    Column("name", String(200), primary_key=True),
    Column("applied_at", UTCDateTime(), nullable=False),
)


def m001_keys(conn: Connection) -> None:
    """API keys: only a hash of each key is kept, with a short prefix to recognise it by."""
    keys = Table(
        "keys", MetaData(),
        Column("id", Integer, primary_key=True),
        Column("name", String(64), nullable=False),
        Column("prefix", String(12), nullable=False),
        Column("key_hash", String(64), nullable=False),  # sha256 hex
        Column("created_at", UTCDateTime(), nullable=False),
        Column("revoked_at", UTCDateTime()),
        Column("last_used_at", UTCDateTime()),
    )
    Index("ux_keys_key_hash", keys.c.key_hash, unique=True)
    # A name is unique among live keys; a revoked key's name can be given to a new one.
    live = keys.c.revoked_at.is_(None)
    Index("ux_keys_live_name", keys.c.name, unique=True,
          sqlite_where=live, postgresql_where=live)
    keys.create(conn)


def m002_audit(conn: Connection) -> None:
    """The audit / usage log: one row per request. A row is never refused over the key it names
    (no foreign key) or a long string (no length limits, which PostgreSQL would enforce)."""
    audit = Table(
        "audit", MetaData(),
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
        Column("ts", UTCDateTime(), nullable=False),
        Column("request_id", String, nullable=False),
        Column("key_id", Integer),
        Column("protocol", String, nullable=False),
        Column("route", String, nullable=False),
        Column("model", String, nullable=False),
        Column("status", Integer, nullable=False),
        Column("input_tokens", Integer, nullable=False),
        Column("output_tokens", Integer, nullable=False),
        Column("ttft_ms", Float),  # no first token: an error, or a response that had none
        Column("duration_ms", Float, nullable=False),
        Column("error_kind", String),
    )
    Index("ix_audit_ts", audit.c.ts)
    Index("ix_audit_request_id", audit.c.request_id)
    Index("ix_audit_key_id_ts", audit.c.key_id, audit.c.ts)
    audit.create(conn)


def m003_routing(conn: Connection) -> None:
    """Routing across tiers: private keys, where each request went and what it cost, and the
    sentinel's calibrated thresholds."""
    # A private key's requests never leave the machine.
    _add_column(conn, "keys", Column("private", Boolean, nullable=False, server_default=false()))
    for added in (
        Column("routed", String),  # the route's name, or the model asked for
        Column("tier", String),
        Column("backend", String),  # the deployment that answered
        Column("fallbacks", Integer, nullable=False, server_default=text("0")),
        Column("cost_usd", Float, nullable=False, server_default=text("0")),
        Column("score", Float),  # the sentinel's score, when it was asked
        Column("trace", Text),  # Trace.to_json(): the reason, attempts, why it stayed private
    ):
        _add_column(conn, "audit", added)
    audit = Table("audit", MetaData(), Column("routed", String), Column("ts", UTCDateTime()))
    Index("ix_audit_routed_ts", audit.c.routed, audit.c.ts).create(conn)

    Table(
        "sentinel_thresholds", MetaData(),
        Column("route", String(200), primary_key=True),
        Column("threshold", Float, nullable=False),
        Column("method", String, nullable=False),  # how it was found, for people to read
        Column("samples", Integer, nullable=False),  # the scores or labels it was found from
        Column("created_at", UTCDateTime(), nullable=False),
    ).create(conn)


def m004_people(conn: Connection) -> None:
    """Who is asking and what they said: users (every key belongs to one; the keys that exist
    become the first admin's, named `owner`, who is also whom key-less loopback requests act
    as), conversations and their turns, feedback on turns, and a log of admins' reads of other
    users' records. Every table of a person's data carries owner_id, so ownership is checked in
    the query itself."""
    users = Table(
        "users", MetaData(),
        Column("id", Integer, primary_key=True),
        Column("name", String(64), nullable=False),
        Column("role", String(16), nullable=False),  # admin | member
        Column("password_hash", String),  # argon2, for the web UI's login; None: no password
        Column("record", String(16), nullable=False, server_default="request"),
        Column("created_at", UTCDateTime(), nullable=False),
    )
    Index("ux_users_name", users.c.name, unique=True)
    users.create(conn)
    owner = conn.execute(insert(users).values(
        name="owner", role="admin", record="request", created_at=utcnow())
        .returning(users.c.id)).scalar()
    _add_column(conn, "keys", Column("user_id", Integer))
    _add_column(conn, "keys", Column("record", String(16)))  # None: the user's setting
    keys = Table("keys", MetaData(), Column("user_id", Integer))
    conn.execute(keys.update().values(user_id=owner))

    conversations = Table(
        "conversations", MetaData(),
        Column("id", String(40), primary_key=True),
        Column("owner_id", Integer, nullable=False),
        Column("title", String, nullable=False),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("updated_at", UTCDateTime(), nullable=False),
    )
    Index("ix_conversations_owner_updated", conversations.c.owner_id,
          conversations.c.updated_at)
    conversations.create(conn)

    turns = Table(
        "turns", MetaData(),
        Column("id", String(40), primary_key=True),
        Column("conversation_id", String(40), nullable=False),
        Column("owner_id", Integer, nullable=False),
        Column("seq", Integer, nullable=False),  # its place in the conversation, from 1
        Column("request_id", String, nullable=False),
        Column("key_id", Integer),
        Column("model", String, nullable=False),  # asked for
        Column("routed", String),
        Column("backend", String),  # the deployment that answered
        Column("messages", Text, nullable=False),  # JSON: what the client sent new this turn
        Column("completion", Text, nullable=False),  # JSON: the answer, one message per choice
        Column("text", Text, nullable=False),  # the turn's words, for search
        Column("state_hash", String(64), nullable=False),  # the conversation after this turn
        Column("input_tokens", Integer, nullable=False),
        Column("output_tokens", Integer, nullable=False),
        Column("ttft_ms", Float),
        Column("duration_ms", Float, nullable=False),
        Column("trace", Text),
        Column("created_at", UTCDateTime(), nullable=False),
    )
    Index("ux_turns_conversation_seq", turns.c.conversation_id, turns.c.seq, unique=True)
    Index("ix_turns_owner_state", turns.c.owner_id, turns.c.state_hash)
    turns.create(conn)

    feedback = Table(
        "feedback", MetaData(),
        Column("id", String(40), primary_key=True),
        Column("owner_id", Integer, nullable=False),
        Column("kind", String(16), nullable=False),  # rating | correction | preference | comment
        Column("turn_id", String(40), nullable=False),
        Column("other_turn_id", String(40)),  # preference: the second answer
        Column("rating", Integer),  # +1 | -1
        Column("preference", String(16)),  # a | b | tie | both_bad
        Column("text", Text),  # the reason, the correction or the comment
        Column("source", String),  # where it was imported from (openwebui:<id>), if it was
        Column("created_at", UTCDateTime(), nullable=False),
    )
    Index("ix_feedback_owner_created", feedback.c.owner_id, feedback.c.created_at)
    Index("ix_feedback_turn", feedback.c.turn_id)
    Index("ix_feedback_other_turn", feedback.c.other_turn_id)
    Index("ix_feedback_source", feedback.c.owner_id, feedback.c.source)
    feedback.create(conn)

    admin_reads = Table(
        "admin_reads", MetaData(),
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
        Column("ts", UTCDateTime(), nullable=False),
        Column("admin_id", Integer, nullable=False),
        Column("user_id", Integer, nullable=False),  # whose record it was
        Column("action", String(32), nullable=False),  # read | delete | rename | export
        Column("resource", String, nullable=False),  # e.g. conversation conv_...
    )
    Index("ix_admin_reads_ts", admin_reads.c.ts)
    admin_reads.create(conn)


def m005_memory(conn: Connection) -> None:
    """Memory: a user's collections of documents, their chunks, and each chunk's vector in an
    index of one embedder (a collection's live index; a new embedder's is built beside it and
    swapped in). Keyword search is SQLite's FTS5 over the chunks, or a tsvector on PostgreSQL;
    vectors are float32 bytes, and also a pgvector column where PostgreSQL has the extension.
    turn_sources links an answer to the chunks it was given, so ratings of the answer reach
    them. A key may turn memory on for its requests (keys.memory)."""
    collections = Table(
        "collections", MetaData(),
        Column("id", Integer, primary_key=True),
        Column("owner_id", Integer, nullable=False),
        Column("name", String(64), nullable=False),
        Column("description", Text, nullable=False, server_default=""),
        Column("cloud", Boolean, nullable=False, server_default=false()),  # may leave the machine
        Column("index_id", Integer),  # the live index (memory_indexes.id)
        Column("created_at", UTCDateTime(), nullable=False),
        Column("updated_at", UTCDateTime(), nullable=False),
    )
    Index("ux_collections_owner_name", collections.c.owner_id, collections.c.name, unique=True)
    collections.create(conn)

    shares = Table(
        "collection_shares", MetaData(),
        Column("collection_id", Integer, primary_key=True),
        Column("user_id", Integer, primary_key=True),  # may read it
        Column("created_at", UTCDateTime(), nullable=False),
    )
    Index("ix_collection_shares_user", shares.c.user_id)
    shares.create(conn)

    indexes = Table(
        "memory_indexes", MetaData(),
        Column("id", Integer, primary_key=True),
        Column("collection_id", Integer, nullable=False),
        Column("embedder", String, nullable=False),
        Column("dim", Integer),  # known from the first vector
        Column("status", String(16), nullable=False),  # building | ready | retired
        Column("version", Integer, nullable=False, server_default="0"),  # bumped by each write
        Column("created_at", UTCDateTime(), nullable=False),
    )
    Index("ix_memory_indexes_collection", indexes.c.collection_id)
    indexes.create(conn)

    documents = Table(
        "documents", MetaData(),
        Column("id", Integer, primary_key=True),
        Column("collection_id", Integer, nullable=False),
        Column("owner_id", Integer, nullable=False),
        Column("source", String, nullable=False),  # the path or URL as ingested
        Column("title", String, nullable=False, server_default=""),
        Column("kind", String(16), nullable=False, server_default=""),
        Column("content_hash", String(64)),  # of what is indexed; None: nothing yet
        Column("status", String(16), nullable=False),  # pending | indexing | ready | failed
        Column("error", Text),
        Column("chunks", Integer, nullable=False, server_default="0"),
        Column("bytes", BigInteger, nullable=False, server_default="0"),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("updated_at", UTCDateTime(), nullable=False),
    )
    Index("ux_documents_collection_source", documents.c.collection_id, documents.c.source,
          unique=True)
    documents.create(conn)

    chunks = Table(
        "chunks", MetaData(),
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
        Column("collection_id", Integer, nullable=False),
        Column("document_id", Integer),  # None: a correction
        Column("owner_id", Integer, nullable=False),
        Column("kind", String(16), nullable=False),  # text | correction
        Column("corrects", BigInteger),  # a correction: the chunk it corrects
        Column("turn_id", String(40)),  # a correction: the answer it corrects
        Column("seq", Integer, nullable=False),  # its place in the document
        Column("text", Text, nullable=False),
        Column("title", String, nullable=False),
        Column("section", String, nullable=False),
        Column("page", Integer),
        Column("char_start", Integer, nullable=False),
        Column("char_end", Integer, nullable=False),
        Column("created_at", UTCDateTime(), nullable=False),
    )
    Index("ix_chunks_document", chunks.c.document_id)
    Index("ix_chunks_collection", chunks.c.collection_id)
    Index("ix_chunks_corrects", chunks.c.corrects)
    chunks.create(conn)

    vectors = Table(
        "chunk_vectors", MetaData(),
        Column("index_id", Integer, primary_key=True),
        Column("chunk_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
        Column("vector", LargeBinary, nullable=False),  # float32, little-endian, normalized
    )
    Index("ix_chunk_vectors_chunk", vectors.c.chunk_id)
    vectors.create(conn)

    sources = Table(
        "turn_sources", MetaData(),
        Column("turn_id", String(40), primary_key=True),
        Column("chunk_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
        Column("owner_id", Integer, nullable=False),  # whose answer
        Column("rank", Integer, nullable=False),  # 1: the best match the answer was given
    )
    Index("ix_turn_sources_chunk", sources.c.chunk_id)
    sources.create(conn)

    _add_column(conn, "keys", Column("memory", String))  # collections, comma-separated

    if conn.dialect.name == "sqlite":
        # External-content FTS5 over chunks: the words are indexed, not stored twice.
        conn.exec_driver_sql(
            "CREATE VIRTUAL TABLE chunks_fts USING fts5(title, section, text, "
            "content='chunks', content_rowid='id', tokenize='porter unicode61')")
        # Triggers keep it in step with chunks, whatever writes them (chunks are never updated,
        # only inserted and deleted).
        conn.exec_driver_sql(
            "CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN "
            "INSERT INTO chunks_fts(rowid, title, section, text) "
            "VALUES (new.id, new.title, new.section, new.text); END")
        conn.exec_driver_sql(
            "CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN "
            "INSERT INTO chunks_fts(chunks_fts, rowid, title, section, text) "
            "VALUES ('delete', old.id, old.title, old.section, old.text); END")
    elif conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            "ALTER TABLE chunks ADD COLUMN tsv tsvector GENERATED ALWAYS AS ("
            "setweight(to_tsvector('english', title), 'A') || "
            "setweight(to_tsvector('english', section), 'B') || "
            "to_tsvector('english', text)) STORED")
        conn.exec_driver_sql("CREATE INDEX ix_chunks_tsv ON chunks USING gin (tsv)")
        _pgvector_column(conn)


def _pgvector_column(conn: Connection) -> None:
    """A pgvector column beside the bytes, where the server has the extension (an HNSW index
    per memory index is made when the index is; memory/pg.py). Without it, vector search reads
    the bytes (memory/index.py's ExactVectors), as on SQLite."""
    available = conn.exec_driver_sql(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").first()
    if available is None:
        return
    conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS vector")
    conn.exec_driver_sql("ALTER TABLE chunk_vectors ADD COLUMN embedding vector")


def m006_web(conn: Connection) -> None:
    """The web UI: browser sessions (a cookie's token is kept only as its sha256, with the
    session's CSRF token; an admin can revoke one), turns that a regenerated or edited answer
    replaced (kept, not shown as the conversation's path: the pair is a preference signal), and
    whose request each audit row was, so the dashboards show a member only their own."""
    sessions = Table(
        "web_sessions", MetaData(),
        Column("id", String(24), primary_key=True),  # shown to admins; not the secret
        Column("token_hash", String(64), nullable=False),
        Column("user_id", Integer, nullable=False),
        Column("csrf", String(64), nullable=False),
        Column("via", String(16), nullable=False),  # password | key | local
        Column("address", String(64)),
        Column("user_agent", String(300)),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("last_seen_at", UTCDateTime(), nullable=False),
        Column("expires_at", UTCDateTime(), nullable=False),
        Column("revoked_at", UTCDateTime()),
    )
    Index("ux_web_sessions_token", sessions.c.token_hash, unique=True)
    Index("ix_web_sessions_user", sessions.c.user_id)
    sessions.create(conn)
    _add_column(conn, "turns", Column("superseded_by", String(40)))
    # chat | arena: the arena's answers are conversations too, listed apart from chats
    _add_column(conn, "conversations",
                Column("kind", String(16), nullable=False, server_default="chat"))
    _add_column(conn, "audit", Column("user_id", Integer))
    conn.exec_driver_sql("CREATE INDEX ix_audit_user_ts ON audit (user_id, ts)")


def m007_adapters(conn: Connection) -> None:
    """Which LoRA adapter version answered each turn ("NAME@vN", or its folder for one loaded
    by path), so feedback on it stays attributed to the version that earned it."""
    _add_column(conn, "turns", Column("adapter", String(200)))


def m008_jobs(conn: Connection) -> None:
    """The job scheduler: each job's state (paused or not, when it last ran and is next due,
    so a run missed while the server was down can be caught up at start) and the history of
    its runs, skipped ones included, each with why and where its output went."""
    Table(
        "jobs", MetaData(),
        Column("name", String(64), primary_key=True),
        Column("paused", Boolean, nullable=False, server_default=false()),
        Column("last_run_at", UTCDateTime()),
        Column("next_run_at", UTCDateTime()),  # None: paused, or no schedule
    ).create(conn)
    runs = Table(
        "job_runs", MetaData(),
        Column("id", String(40), primary_key=True),  # jobrun_<hex>
        Column("job", String(64), nullable=False),
        Column("trigger", String(16), nullable=False),  # schedule | manual | catch-up
        # queued | running | succeeded | failed | skipped | cancelled
        Column("status", String(16), nullable=False),
        Column("why", Text, nullable=False, server_default=""),
        Column("exit_code", Integer),
        Column("started_at", UTCDateTime(), nullable=False),  # when it was triggered
        Column("finished_at", UTCDateTime()),
        Column("log", Text),  # the output's file; None: none was written
    )
    Index("ix_job_runs_job_started", runs.c.job, runs.c.started_at)
    Index("ix_job_runs_started", runs.c.started_at)
    runs.create(conn)


def m009_agents(conn: Connection) -> None:
    """Agents: each run (its owner, agent, task, state and answer), the journal of its steps
    (model calls and tool calls, each written as it starts and as it ends, so a restarted
    server resumes a run without repeating a finished call), and each MCP server's tool list
    as last seen and as last approved (a changed list waits for approval)."""
    runs = Table(
        "agent_runs", MetaData(),
        Column("id", String(40), primary_key=True),  # run_<hex>
        Column("owner_id", Integer, nullable=False),
        Column("agent", String(64), nullable=False),
        Column("task", Text, nullable=False),
        # queued | running | waiting_approval | succeeded | failed | cancelled
        Column("status", String(24), nullable=False),
        Column("why", Text, nullable=False, server_default=""),
        Column("result", Text, nullable=False, server_default=""),
        Column("steps", Integer, nullable=False, server_default="0"),
        Column("tokens", Integer, nullable=False, server_default="0"),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("updated_at", UTCDateTime(), nullable=False),
        Column("finished_at", UTCDateTime()),
    )
    Index("ix_agent_runs_owner_created", runs.c.owner_id, runs.c.created_at)
    Index("ix_agent_runs_status", runs.c.status)
    runs.create(conn)
    steps = Table(
        "run_steps", MetaData(),
        Column("run_id", String(40), primary_key=True),
        Column("seq", Integer, primary_key=True),
        Column("node", String(64), nullable=False),
        Column("kind", String(16), nullable=False),  # model | tool
        Column("name", String(200), nullable=False),  # the model, or the tool
        Column("call_id", String(100)),  # a tool call's id, as the model gave it
        # started | done | failed | waiting_approval | denied
        Column("status", String(24), nullable=False),
        Column("data", Text, nullable=False, server_default="{}"),
        Column("started_at", UTCDateTime(), nullable=False),
        Column("finished_at", UTCDateTime()),
    )
    Index("ix_run_steps_status", steps.c.status)
    steps.create(conn)
    Table(
        "mcp_pins", MetaData(),
        Column("server", String(64), primary_key=True),
        Column("approved_hash", String(64)),
        Column("seen_hash", String(64), nullable=False),
        Column("seen_tools", Text, nullable=False, server_default="[]"),
        Column("seen_at", UTCDateTime(), nullable=False),
        Column("approved_at", UTCDateTime()),
    ).create(conn)


def m010_responses(conn: Connection) -> None:
    """Stored responses of OpenAI's Responses API (`store: true`): each response object as
    answered, with the conversation the model saw (in Responses item form, the instructions
    apart), so a later request can continue it by `previous_response_id`."""
    responses = Table(
        "responses", MetaData(),
        Column("id", String(64), primary_key=True),  # resp_<hex>
        Column("owner_id", Integer, nullable=False),
        Column("model", String(200), nullable=False),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("response", Text, nullable=False),  # the response object, JSON
        Column("input_items", Text, nullable=False, server_default="[]"),  # JSON list
        Column("previous_response_id", String(64)),
    )
    Index("ix_responses_owner_created", responses.c.owner_id, responses.c.created_at)
    responses.create(conn)


def m011_context(conn: Connection) -> None:
    """The context engine: the events its sources noticed (each once per source and key), what
    each source remembers between runs, each trigger's delivery of an event as an agent run
    (attempts, backoff, the run, the end), and the people's inbox of notifications."""
    events = Table(
        "context_events", MetaData(),
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("source", String(64), nullable=False),
        Column("key_hash", String(64), nullable=False),  # sha256 of the key: keys may be long
        Column("key", Text, nullable=False),
        Column("kind", String(32), nullable=False),
        Column("payload", Text, nullable=False, server_default="{}"),
        Column("at", UTCDateTime(), nullable=False),
    )
    Index("ux_context_events_source_key", events.c.source, events.c.key_hash, unique=True)
    Index("ix_context_events_at", events.c.at)
    events.create(conn)
    Table(
        "context_cursors", MetaData(),
        Column("source", String(64), primary_key=True),
        Column("state", Text, nullable=False, server_default="{}"),
        Column("updated_at", UTCDateTime(), nullable=False),
    ).create(conn)
    deliveries = Table(
        "context_deliveries", MetaData(),
        Column("event_id", Integer, primary_key=True),
        Column("trigger", String(64), primary_key=True),
        Column("owner_id", Integer, nullable=False),
        # pending | running | succeeded | failed (given up after its attempts)
        Column("status", String(16), nullable=False),
        Column("attempts", Integer, nullable=False, server_default="0"),
        Column("next_at", UTCDateTime(), nullable=False),  # when a pending one is due
        Column("run_id", String(40)),  # the agent run of the last attempt
        Column("error", Text, nullable=False, server_default=""),
        Column("updated_at", UTCDateTime(), nullable=False),
    )
    Index("ix_context_deliveries_status_next", deliveries.c.status, deliveries.c.next_at)
    Index("ix_context_deliveries_owner", deliveries.c.owner_id, deliveries.c.updated_at)
    deliveries.create(conn)
    inbox = Table(
        "inbox", MetaData(),
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("owner_id", Integer, nullable=False),
        Column("title", Text, nullable=False),
        Column("body", Text, nullable=False, server_default=""),
        Column("url", Text),
        Column("source", String(100), nullable=False, server_default=""),  # trigger or job
        Column("run_id", String(40)),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("read_at", UTCDateTime()),
    )
    Index("ix_inbox_owner_created", inbox.c.owner_id, inbox.c.created_at)
    inbox.create(conn)


def m012_job_energy(conn: Connection) -> None:
    """The energy a job run used (joules, from the CPU's RAPL counters where they can be read;
    NULL where they cannot), and runs that wait for the energy policy (status "deferred")."""
    _add_column(conn, "job_runs", Column("energy_j", Float))


MIGRATIONS: list[Migration] = [m001_keys, m002_audit, m003_routing, m004_people, m005_memory,
                               m006_web, m007_adapters, m008_jobs, m009_agents,
                               m010_responses, m011_context, m012_job_energy]


def _add_column(conn: Connection, table: str, added: Column) -> None:
    """ALTER TABLE ... ADD COLUMN, with the column rendered by the database's own dialect (so a
    boolean default is `0` on SQLite and `false` on PostgreSQL). A NOT NULL column needs a
    server default, which fills the rows already there."""
    Table(table, MetaData(), added)  # CreateColumn renders a column of a table
    spec = CreateColumn(added).compile(dialect=conn.dialect)
    quoted = conn.dialect.identifier_preparer.quote(table)
    conn.exec_driver_sql(f"ALTER TABLE {quoted} ADD COLUMN {spec}")


def applied_migrations(engine: Engine) -> list[str]:
    """Names of the migrations this database has had, in the order they were applied."""
    with engine.connect() as conn:
        if not engine.dialect.has_table(conn, _applied.name):
            return []
        order = (_applied.c.applied_at, _applied.c.name)  # names are numbered: m001_, m002_, ...
        rows = conn.execute(select(_applied.c.name).order_by(*order))
        return list(rows.scalars())


def migrate(engine: Engine, migrations: Sequence[Migration] = MIGRATIONS) -> list[str]:
    """Apply the migrations this database has not had yet, in order; return their names.

    Safe when two processes open a new database at once: each migration re-checks, inside its
    own write transaction, that the other has not applied it meanwhile.
    """
    names = [m.__name__ for m in migrations]
    if len(set(names)) != len(names):
        raise ValueError(f"migration names must be unique: {names}")
    applied = applied_migrations(engine)
    unknown = [name for name in applied if name not in names]
    if unknown:
        raise ValueError(
            f"the state database at {engine.url.render_as_string()} was migrated by a newer "
            f"tenshu ({', '.join(unknown)}); upgrade tenshu to use it"
        )
    done = []
    for migration in migrations:
        if migration.__name__ in applied:
            continue
        with begin_write(engine) as conn:
            _applied.create(conn, checkfirst=True)
            seen = select(_applied.c.name).where(_applied.c.name == migration.__name__)
            if conn.execute(seen).first() is not None:
                continue
            migration(conn)
            conn.execute(insert(_applied).values(name=migration.__name__, applied_at=utcnow()))
        done.append(migration.__name__)
    return done
