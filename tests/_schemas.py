"""The DDL that released gateways ran, step by step, as they ran it: the schema of files
and databases in the field. Migrations start from these (tests/test_store_schema.py holds
the declarations in store/sql/schema.py to them; older files in tests are made with them)."""


# SQLite (PRAGMA user_version); version 3 is a VACUUM into incremental auto-vacuum.

SQLITE_1 = """
CREATE TABLE batches (
    batch_id TEXT PRIMARY KEY,
    caller TEXT NOT NULL,
    request_id TEXT NOT NULL,
    fingerprint BLOB NOT NULL,
    backend TEXT NOT NULL,
    spec BLOB NOT NULL,
    bound INTEGER NOT NULL,
    total INTEGER NOT NULL,
    duplicates_removed INTEGER NOT NULL,
    create_time REAL NOT NULL,
    send_before REAL,
    state INTEGER NOT NULL,
    accepted INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    uncertain INTEGER NOT NULL DEFAULT 0,
    vendor_calls INTEGER NOT NULL DEFAULT 0,
    update_time REAL NOT NULL,
    end_time REAL,
    planned_to INTEGER NOT NULL DEFAULT 0,
    chunk_count INTEGER NOT NULL DEFAULT 0,
    next_seq INTEGER NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX batches_by_request ON batches (caller, request_id) WHERE request_id != '';
CREATE INDEX batches_by_caller ON batches (caller, create_time, batch_id);
CREATE INDEX batches_unfinished ON batches (state) WHERE state IN (1, 2, 4);
CREATE INDEX batches_ended ON batches (end_time) WHERE end_time IS NOT NULL;
CREATE TABLE recipient_pages (
    batch_id TEXT NOT NULL,
    page INTEGER NOT NULL,
    ids TEXT NOT NULL,
    indexes TEXT NOT NULL,
    PRIMARY KEY (batch_id, page)
) WITHOUT ROWID;
CREATE TABLE chunks (
    batch_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    start_pos INTEGER NOT NULL,
    end_pos INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    owner TEXT NOT NULL,
    PRIMARY KEY (batch_id, number)
) WITHOUT ROWID;
CREATE INDEX chunks_in_flight ON chunks (state) WHERE state IN ('claimed', 'sending');
CREATE TABLE outcomes (
    batch_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (batch_id, seq)
) WITHOUT ROWID;
"""

SQLITE_2 = """
CREATE TABLE recipient_lists (
    list_key INTEGER PRIMARY KEY,
    list_id TEXT NOT NULL UNIQUE,
    caller TEXT NOT NULL,
    create_time REAL NOT NULL,
    request_id TEXT NOT NULL,
    fingerprint BLOB NOT NULL,
    count INTEGER NOT NULL,
    received INTEGER NOT NULL,
    widest_id TEXT NOT NULL,
    widest_index INTEGER NOT NULL,
    ready_time REAL
);
CREATE UNIQUE INDEX recipient_lists_by_request ON recipient_lists (caller, request_id)
    WHERE request_id != '';
CREATE INDEX recipient_lists_by_age ON recipient_lists (create_time);
CREATE TABLE list_members (
    list_key INTEGER NOT NULL,
    recipient_id TEXT NOT NULL,
    PRIMARY KEY (list_key, recipient_id)
) WITHOUT ROWID;
CREATE TABLE list_pages (
    list_key INTEGER NOT NULL,
    page INTEGER NOT NULL,
    ids TEXT NOT NULL,
    indexes TEXT NOT NULL,
    PRIMARY KEY (list_key, page)
) WITHOUT ROWID;
CREATE TABLE batch_lists (
    batch_id TEXT PRIMARY KEY,
    list_key INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX batch_lists_by_list ON batch_lists (list_key);
"""

SQLITE_4 = """
CREATE INDEX batches_queued ON batches (backend, caller, create_time, batch_id)
    WHERE state = 1;
"""


# PostgreSQL (table schema_version).

POSTGRESQL_1 = """
    CREATE TABLE batches (
        batch_id text PRIMARY KEY,
        caller text NOT NULL,
        request_id text NOT NULL,
        fingerprint bytea NOT NULL,
        backend text NOT NULL,
        spec bytea NOT NULL,
        bound boolean NOT NULL,
        total integer NOT NULL,
        duplicates_removed integer NOT NULL,
        create_time double precision NOT NULL,
        send_before double precision,
        state integer NOT NULL,
        accepted integer NOT NULL DEFAULT 0,
        failed integer NOT NULL DEFAULT 0,
        uncertain integer NOT NULL DEFAULT 0,
        vendor_calls integer NOT NULL DEFAULT 0,
        update_time double precision NOT NULL,
        end_time double precision,
        planned_to integer NOT NULL DEFAULT 0,
        chunk_count integer NOT NULL DEFAULT 0,
        next_seq integer NOT NULL DEFAULT 1,
        owner text NOT NULL DEFAULT ''
    );
    CREATE UNIQUE INDEX batches_by_request ON batches (caller, request_id)
        WHERE request_id <> '';
    CREATE INDEX batches_by_caller ON batches (caller, create_time, batch_id);
    CREATE INDEX batches_unfinished ON batches (owner) WHERE state IN (1, 2, 4);
    CREATE INDEX batches_ended ON batches (end_time) WHERE end_time IS NOT NULL;
    CREATE TABLE recipient_pages (
        batch_id text NOT NULL,
        page integer NOT NULL,
        ids text NOT NULL,
        indexes text NOT NULL,
        PRIMARY KEY (batch_id, page)
    );
    CREATE TABLE chunks (
        batch_id text NOT NULL,
        number integer NOT NULL,
        start_pos integer NOT NULL,
        end_pos integer NOT NULL,
        state text NOT NULL,
        attempts integer NOT NULL,
        owner text NOT NULL,
        PRIMARY KEY (batch_id, number)
    );
    CREATE INDEX chunks_in_flight ON chunks (batch_id) WHERE state IN ('claimed', 'sending');
    CREATE TABLE outcomes (
        batch_id text NOT NULL,
        seq integer NOT NULL,
        data bytea NOT NULL,
        count integer NOT NULL,
        PRIMARY KEY (batch_id, seq)
    );
    CREATE TABLE replicas (
        owner text PRIMARY KEY,
        started timestamptz NOT NULL DEFAULT now(),
        heartbeat timestamptz NOT NULL
    );
    """

POSTGRESQL_2 = """
    CREATE TABLE recipient_lists (
        list_key bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        list_id text NOT NULL UNIQUE,
        caller text NOT NULL,
        create_time double precision NOT NULL,
        request_id text NOT NULL,
        fingerprint bytea NOT NULL,
        count integer NOT NULL,
        received integer NOT NULL,
        widest_id text NOT NULL,
        widest_index integer NOT NULL,
        ready_time double precision
    );
    CREATE UNIQUE INDEX recipient_lists_by_request ON recipient_lists (caller, request_id)
        WHERE request_id <> '';
    CREATE INDEX recipient_lists_by_age ON recipient_lists (create_time);
    CREATE TABLE list_members (
        list_key bigint NOT NULL,
        recipient_id text NOT NULL,
        PRIMARY KEY (list_key, recipient_id)
    );
    CREATE TABLE list_pages (
        list_key bigint NOT NULL,
        page integer NOT NULL,
        ids text NOT NULL,
        indexes text NOT NULL,
        PRIMARY KEY (list_key, page)
    );
    CREATE TABLE batch_lists (
        batch_id text PRIMARY KEY,
        list_key bigint NOT NULL
    );
    CREATE INDEX batch_lists_by_list ON batch_lists (list_key);
    """

POSTGRESQL_3 = """
    CREATE INDEX batches_queued ON batches (backend, owner, caller, create_time, batch_id)
        WHERE state = 1;
    """


SQLITE_5 = """
ALTER TABLE batches ADD COLUMN send_after REAL;
ALTER TABLE batches ADD COLUMN recall_of TEXT NOT NULL DEFAULT '';
ALTER TABLE batches ADD COLUMN recalled_by TEXT NOT NULL DEFAULT '';
DROP INDEX batches_unfinished;
CREATE INDEX batches_unfinished ON batches (state) WHERE state IN (1, 2, 4, 6);
CREATE INDEX batches_scheduled ON batches (send_after) WHERE state = 6;
CREATE TABLE recall_keys (
    batch_id TEXT NOT NULL,
    page INTEGER NOT NULL,
    keys TEXT NOT NULL,
    PRIMARY KEY (batch_id, page)
) WITHOUT ROWID;
"""

SQLITE_6 = """
CREATE TABLE webhook_events (
    event_id TEXT NOT NULL,
    url TEXT NOT NULL,
    type TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    create_time REAL NOT NULL,
    next_attempt REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    body BLOB,
    PRIMARY KEY (event_id, url)
);
CREATE INDEX webhook_events_due ON webhook_events (url, next_attempt);
"""

POSTGRESQL_4 = """
    ALTER TABLE batches ADD COLUMN send_after double precision;
    ALTER TABLE batches ADD COLUMN recall_of text NOT NULL DEFAULT '';
    ALTER TABLE batches ADD COLUMN recalled_by text NOT NULL DEFAULT '';
    DROP INDEX batches_unfinished;
    CREATE INDEX batches_unfinished ON batches (owner) WHERE state IN (1, 2, 4, 6);
    CREATE INDEX batches_scheduled ON batches (owner, send_after) WHERE state = 6;
    CREATE TABLE recall_keys (
        batch_id text NOT NULL,
        page integer NOT NULL,
        keys text NOT NULL,
        PRIMARY KEY (batch_id, page)
    );
    """


POSTGRESQL_5 = """
    CREATE TABLE webhook_events (
        event_id text NOT NULL,
        url text NOT NULL,
        type text NOT NULL,
        batch_id text NOT NULL,
        create_time double precision NOT NULL,
        next_attempt double precision NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        body bytea,
        PRIMARY KEY (event_id, url)
    );
    CREATE INDEX webhook_events_due ON webhook_events (url, next_attempt);
    """


SQLITE_7 = """
ALTER TABLE recipient_lists ADD COLUMN longest TEXT NOT NULL DEFAULT '';
"""


POSTGRESQL_6 = """
    ALTER TABLE recipient_lists ADD COLUMN longest text NOT NULL DEFAULT '';
    """


SQLITE_STEPS: tuple[str | None, ...] = (
    SQLITE_1,
    SQLITE_2,
    None,
    SQLITE_4,
    SQLITE_5,
    SQLITE_6,
    SQLITE_7,
)
POSTGRESQL_STEPS = (
    POSTGRESQL_1,
    POSTGRESQL_2,
    POSTGRESQL_3,
    POSTGRESQL_4,
    POSTGRESQL_5,
    POSTGRESQL_6,
)
