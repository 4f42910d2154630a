-- The SQL both stores send, by name (read by queries.py). A query for both dialects is
-- written once, with PostgreSQL's placeholders ($1, $2, ...: SQLite gets ?1, ?2, ...);
-- a dialect's own form is marked "(sqlite)" or "(postgresql)". An entry may hold several
-- statements, run in order. {braces} are filled in when read: {batch_columns} (BatchRow's
-- fields, the batches table's columns but PostgreSQL's owner), {list_columns} (ListRow's),
-- {chunk_columns} (the chunk table's, ChunkRow's fields in order), batch states ({QUEUED},
-- {RUNNING}, {CANCELLING}, {CANCELLED}, {DONE}, {SCHEDULED}; {unfinished} and {ended} as
-- lists) and chunk states
-- ({planned}, {claimed}, {sending}, quoted).
--
-- PostgreSQL's steps of a small send are one statement each (issue 20: no BEGIN and
-- COMMIT around them): create_small_batch, write_ahead, record, set_state.

-- ---------------------------------------------------------------------------------------
-- Batches
-- ---------------------------------------------------------------------------------------

-- batch --
SELECT {batch_columns} FROM batches WHERE batch_id = $1;

-- batch_state --
SELECT state FROM batches WHERE batch_id = $1;

-- batch_by_request --
SELECT {batch_columns} FROM batches WHERE caller = $1 AND request_id = $2;

-- caller_batches --
-- The caller's newest first.
SELECT {batch_columns} FROM batches WHERE caller = $1
ORDER BY create_time DESC, batch_id DESC LIMIT $2;

-- caller_batches_before --
-- The caller's newest first, older than (create_time, batch_id) ($2, $3).
SELECT {batch_columns} FROM batches WHERE caller = $1 AND (create_time, batch_id) < ($2, $3)
ORDER BY create_time DESC, batch_id DESC LIMIT $4;

-- unfinished_batches --
SELECT {batch_columns} FROM batches WHERE state IN {unfinished} ORDER BY create_time, batch_id;

-- create_batch (sqlite) --
-- $1..$12: BatchRow's fields up to state; $13, $14: planned_to, chunk_count; $15, $16:
-- send_after, recall_of.
INSERT INTO batches ({batch_columns})
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 0, 0, 0, 0, $10, NULL, $13, $14, 1,
    $15, $16, '')
RETURNING {batch_columns};

-- create_batch (postgresql) --
-- $1..$12: BatchRow's fields up to state; $13: the owner; $14, $15: send_after,
-- recall_of. Two replicas racing one request_id: the second waits for the first's
-- commit, and inserts nothing.
INSERT INTO batches ({batch_columns}, owner)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 0, 0, 0, 0, $10, NULL, 0, 0, 1,
    $14, $15, '', $13)
ON CONFLICT (caller, request_id) WHERE request_id <> '' DO NOTHING
RETURNING {batch_columns};

-- create_small_batch (postgresql) --
-- A batch of one page (and its first chunk, SENDING, when $17 = 1) in one statement: no
-- transaction to open and commit, no COPY (which asks the server for the columns first).
-- $1..$15 as create_batch; $16, $17: planned_to, chunk_count; $18, $19: the page.
WITH b AS (
    INSERT INTO batches ({batch_columns}, owner)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 0, 0, 0, 0, $10, NULL, $16, $17, 1,
        $14, $15, '', $13)
    ON CONFLICT (caller, request_id) WHERE request_id <> '' DO NOTHING
    RETURNING {batch_columns}
), p AS (
    INSERT INTO recipient_pages (batch_id, page, ids, indexes) SELECT batch_id, 0, $18, $19 FROM b
), c AS (
    INSERT INTO chunks ({chunk_columns})
    SELECT batch_id, 0, 0, $16, {sending}, 1, $13 FROM b WHERE $17 = 1
)
SELECT * FROM b;

-- insert_pages --
INSERT INTO recipient_pages (batch_id, page, ids, indexes) VALUES ($1, $2, $3, $4);

-- recipient_pages --
-- Pages $2..$3 of a batch's recipients: its own, or (made from a list) the list's.
SELECT page, ids, indexes FROM recipient_pages WHERE batch_id = $1 AND page BETWEEN $2 AND $3
UNION ALL
SELECT page, ids, indexes FROM list_pages
WHERE list_key = (SELECT list_key FROM batch_lists WHERE batch_id = $1) AND page BETWEEN $2 AND $3
ORDER BY page;

-- set_state (sqlite) --
-- $2: the state, $3: now, $4: end_time. An ended batch stays ended; CANCELLING stays when
-- RUNNING is asked.
UPDATE batches SET state = $2, update_time = $3, end_time = $4
WHERE batch_id = $1 AND state NOT IN {ended} AND NOT (state = {CANCELLING} AND $2 = {RUNNING});

-- set_state (postgresql) --
-- As SQLite's ($3: whether the state ends the batch, $4: the NOTIFY channel), in one
-- statement: the row as updated, or as it is when the update does not apply. When it
-- ends the batch, its webhook events ($5, $6, $7: ids, urls, types) go to the outbox.
WITH u AS (
    UPDATE batches SET state = $2,
        update_time = extract(epoch FROM clock_timestamp()),
        end_time = CASE WHEN $3 THEN extract(epoch FROM clock_timestamp()) END
    WHERE batch_id = $1 AND state NOT IN {ended}
        AND NOT (state = {CANCELLING} AND $2 = {RUNNING})
    RETURNING {batch_columns}
), w AS (
    INSERT INTO webhook_events (event_id, url, type, batch_id, create_time, next_attempt)
    SELECT e.event_id, e.url, e.type, u.batch_id, u.end_time, u.end_time
    FROM u CROSS JOIN unnest($5::text[], $6::text[], $7::text[]) AS e(event_id, url, type)
    WHERE $3
)
SELECT x.*, pg_notify($4, $1 || ' ' || $2) FROM (
    SELECT * FROM u
    UNION ALL
    SELECT {batch_columns} FROM batches WHERE batch_id = $1 AND NOT EXISTS (SELECT 1 FROM u)
) x;

-- ---------------------------------------------------------------------------------------
-- Chunks and outcomes
-- ---------------------------------------------------------------------------------------

-- batch_chunks --
SELECT {chunk_columns} FROM chunks WHERE batch_id = $1 ORDER BY number;

-- insert_chunk --
INSERT INTO chunks ({chunk_columns}) VALUES ($1, $2, $3, $4, $5, $6, $7);

-- advance_planned --
-- Count chunk $3 [$4, $2) as the batch's next one, if it follows the planned ones.
UPDATE batches SET chunk_count = chunk_count + 1, planned_to = $2
WHERE batch_id = $1 AND chunk_count = $3 AND planned_to = $4;

-- chunk_state --
SELECT state, owner, attempts FROM chunks WHERE batch_id = $1 AND number = $2;

-- move_chunk (sqlite) --
-- Chunk $2 to state $3 by owner $4 at attempt $5, if it is PLANNED or CLAIMED, or SENDING
-- by the same owner: the fence in the WHERE, one statement on the usual path.
UPDATE chunks SET state = $3, owner = $4, attempts = $5
WHERE batch_id = $1 AND number = $2
    AND (state IN ({planned}, {claimed}) OR (state = {sending} AND owner = $4));

-- move_chunk (postgresql) --
-- As SQLite's, and a SENDING chunk only at no later attempt.
UPDATE chunks SET state = $3, owner = $4, attempts = $5
WHERE batch_id = $1 AND number = $2
    AND (state IN ({planned}, {claimed}) OR (state = {sending} AND owner = $4 AND attempts <= $5));

-- count_outcomes (sqlite) --
-- A record's counts ($2..$5) and the page's seq (returned); $6: now.
UPDATE batches SET next_seq = next_seq + 1, accepted = accepted + $2, failed = failed + $3,
    uncertain = uncertain + $4, vendor_calls = vendor_calls + $5, update_time = $6
WHERE batch_id = $1 RETURNING next_seq - 1;

-- count_last_outcomes (sqlite) --
-- count_outcomes, ending the batch: DONE, or CANCELLED if a cancel came while the last
-- chunk was in flight.
UPDATE batches SET next_seq = next_seq + 1, accepted = accepted + $2, failed = failed + $3,
    uncertain = uncertain + $4, vendor_calls = vendor_calls + $5, update_time = $6,
    end_time = $6,
    state = CASE state WHEN {CANCELLING} THEN {CANCELLED} ELSE {DONE} END
WHERE batch_id = $1 RETURNING next_seq - 1, {batch_columns};

-- insert_outcomes (sqlite) --
INSERT INTO outcomes (batch_id, seq, data, count) VALUES ($1, $2, $3, $4);

-- write_ahead (postgresql) --
-- Chunk $2 [$5, $6) SENDING by $3 at attempt $4, as record below (without counts and
-- page): 1 when done, 0 when the batch is not $3's, the chunk is fenced, or the batch may
-- not send (a cancel committed on any replica fences it: issue 22).
WITH own AS (
    SELECT chunk_count, planned_to FROM batches
    WHERE batch_id = $1 AND owner = $3 AND state IN ({QUEUED}, {RUNNING}) FOR NO KEY UPDATE
), upd AS (
    UPDATE chunks SET state = {sending}, owner = $3, attempts = $4
    WHERE batch_id = $1 AND number = $2 AND EXISTS (SELECT 1 FROM own)
        AND (state IN ({planned}, {claimed}) OR (state = {sending} AND owner = $3 AND attempts <= $4))
    RETURNING 1
), ins AS (
    INSERT INTO chunks ({chunk_columns})
    SELECT $1, $2, $5, $6, {sending}, $4, $3 FROM own
    WHERE chunk_count = $2 AND planned_to = $5 AND NOT EXISTS (SELECT 1 FROM upd)
    RETURNING 1
), b AS (
    UPDATE batches SET chunk_count = chunk_count + 1, planned_to = $6
    WHERE batch_id = $1 AND EXISTS (SELECT 1 FROM ins) RETURNING 1
)
SELECT (SELECT count(*) FROM upd) + (SELECT count(*) FROM b);

-- record (postgresql) --
-- The usual record in one statement: lock the batch row if owner $4 owns it, move chunk
-- $2 [$6, $7) to state $3 at attempt $5 (an existing row that is PLANNED, CLAIMED or
-- SENDING by the owner, or a new row that follows the planned ones), add the counts
-- ($8..$11) and with $13 end the batch and write its webhook events ($15, $16, $17: ids,
-- urls, types) to the outbox, store the page ($12), notify channel $14. No row when it
-- changes nothing.
WITH own AS (
    SELECT chunk_count, planned_to FROM batches
    WHERE batch_id = $1 AND owner = $4 FOR NO KEY UPDATE
), upd AS (
    UPDATE chunks SET state = $3, owner = $4, attempts = $5
    WHERE batch_id = $1 AND number = $2 AND EXISTS (SELECT 1 FROM own)
        AND (state IN ({planned}, {claimed}) OR (state = {sending} AND owner = $4 AND attempts <= $5))
    RETURNING 1
), ins AS (
    INSERT INTO chunks ({chunk_columns})
    SELECT $1, $2, $6, $7, $3, $5, $4 FROM own
    WHERE chunk_count = $2 AND planned_to = $6 AND NOT EXISTS (SELECT 1 FROM upd)
    RETURNING 1
), b AS (
    UPDATE batches SET next_seq = next_seq + 1, accepted = accepted + $8,
        failed = failed + $9, uncertain = uncertain + $10, vendor_calls = vendor_calls + $11,
        update_time = extract(epoch FROM clock_timestamp()),
        chunk_count = chunk_count + (SELECT count(*) FROM ins),
        planned_to = CASE WHEN EXISTS (SELECT 1 FROM ins) THEN $7 ELSE planned_to END,
        state = CASE WHEN NOT $13 THEN state WHEN state = {CANCELLING} THEN {CANCELLED}
            ELSE {DONE} END,
        end_time = CASE WHEN $13 THEN extract(epoch FROM clock_timestamp()) ELSE end_time END
    WHERE batch_id = $1 AND (EXISTS (SELECT 1 FROM upd) OR EXISTS (SELECT 1 FROM ins))
    RETURNING next_seq - 1 AS seq, {batch_columns}
), o AS (
    INSERT INTO outcomes (batch_id, seq, data, count) SELECT $1, seq, $12, $7 - $6 FROM b
), w AS (
    INSERT INTO webhook_events (event_id, url, type, batch_id, create_time, next_attempt)
    SELECT e.event_id, e.url, e.type, b.batch_id, b.end_time, b.end_time
    FROM b CROSS JOIN unnest($15::text[], $16::text[], $17::text[]) AS e(event_id, url, type)
    WHERE $13
)
SELECT b.*, pg_notify($14, $1) FROM b;

-- take_unowned (postgresql) --
-- A batch created without an owner is taken by its first writer.
UPDATE batches SET owner = $2 WHERE batch_id = $1 AND owner = '';

-- batch_owner (postgresql) --
-- KEY SHARE: writers of one batch do not wait for each other, an adopter's FOR UPDATE
-- does not interleave with them.
SELECT owner FROM batches WHERE batch_id = $1 FOR KEY SHARE;

-- outcomes_after (sqlite) --
-- Stepped one row at a time by the reader, which stops at its bound in bytes.
SELECT seq, data, count FROM outcomes WHERE batch_id = $1 AND seq > $2 ORDER BY seq;

-- outcomes_after (postgresql) --
-- Pages hold one chunk (up to ~40 KB): about what fits ($3 pages) is read, then trimmed.
SELECT seq, data, count FROM outcomes WHERE batch_id = $1 AND seq > $2 ORDER BY seq LIMIT $3;

-- ---------------------------------------------------------------------------------------
-- Recovery and replicas
-- ---------------------------------------------------------------------------------------

-- reclaim_chunks (sqlite) --
UPDATE chunks SET state = {planned}
WHERE state = {claimed} AND batch_id IN (SELECT batch_id FROM batches WHERE state IN {unfinished});

-- reclaim_chunks (postgresql) --
UPDATE chunks SET state = {planned} WHERE state = {claimed} AND batch_id = ANY($1);

-- hand_over_sending (sqlite) --
UPDATE chunks SET owner = $1
WHERE state = {sending} AND batch_id IN (SELECT batch_id FROM batches WHERE state IN {unfinished})
RETURNING {chunk_columns};

-- hand_over_sending (postgresql) --
UPDATE chunks SET owner = $1 WHERE state = {sending} AND batch_id = ANY($2)
RETURNING {chunk_columns};

-- requeue_running (sqlite) --
-- Whatever was running waits in the queue again, in its place (create_time).
UPDATE batches SET state = {QUEUED} WHERE state = {RUNNING} AND NOT bound;

-- requeue_running (postgresql) --
UPDATE batches SET state = {QUEUED} WHERE batch_id = ANY($1) AND state = {RUNNING} AND NOT bound;

-- batches_to_close (sqlite) --
SELECT batch_id FROM batches
WHERE state IN {unfinished} AND (bound OR state = {CANCELLING}) ORDER BY create_time;

-- batches_to_close (postgresql) --
SELECT batch_id FROM batches
WHERE batch_id = ANY($1) AND (bound OR state = {CANCELLING}) ORDER BY create_time;

-- heartbeat (postgresql) --
INSERT INTO replicas (owner, heartbeat) VALUES ($1, now())
ON CONFLICT (owner) DO UPDATE SET heartbeat = now();

-- retire (postgresql) --
DELETE FROM replicas WHERE owner = $1;

-- release (postgresql) --
-- No owner: adoptable by any sweep, as if its owner had died.
UPDATE batches SET owner = '' WHERE batch_id = $1 AND owner = $2 AND state IN {unfinished};

-- sweep_lock (postgresql) --
-- One sweeper at a time per schema (a restart's recovery waits for it).
SELECT pg_advisory_xact_lock(hashtext(current_schema() || ' sweep'));

-- try_sweep_lock (postgresql) --
-- One sweeper at a time per schema (the others find it taken and skip).
SELECT pg_try_advisory_xact_lock(hashtext(current_schema() || ' sweep'));

-- adoptable_batches (postgresql) --
-- Unfinished batches of replicas whose heartbeat is older than $2 seconds, locked.
SELECT batch_id FROM batches b
WHERE state IN {unfinished} AND owner <> $1 AND NOT EXISTS (
    SELECT 1 FROM replicas r
    WHERE r.owner = b.owner AND r.heartbeat > now() - make_interval(secs => $2)
)
ORDER BY create_time, batch_id FOR UPDATE SKIP LOCKED;

-- adopt_batches (postgresql) --
UPDATE batches SET owner = $1 WHERE batch_id = ANY($2);

-- forget_dead_replicas (postgresql) --
-- Replicas presumed dead keep no row; one that wakes up writes a new one.
DELETE FROM replicas WHERE heartbeat <= now() - make_interval(secs => $1) AND owner <> $2;

-- ---------------------------------------------------------------------------------------
-- The queue
-- ---------------------------------------------------------------------------------------

-- claim_queued (sqlite) --
-- The $4 oldest QUEUED batches of caller $2 on backend $1, RUNNING from now ($3), in any
-- order (RETURNING keeps none).
UPDATE batches SET state = {RUNNING}, update_time = $3
WHERE batch_id IN (
    SELECT batch_id FROM batches WHERE backend = $1 AND caller = $2 AND state = {QUEUED}
    ORDER BY create_time, batch_id LIMIT $4
)
RETURNING {batch_columns};

-- claim_queued (postgresql) --
-- The $4 oldest QUEUED batches of caller $3 on backend $1 owned by $2, RUNNING from now,
-- in any order. ANY(ARRAY(...)): the locking subquery runs once (an IN subquery may be
-- planned as a join that runs it again).
UPDATE batches SET state = {RUNNING}, update_time = extract(epoch FROM clock_timestamp())
WHERE batch_id = ANY(ARRAY(
    SELECT batch_id FROM batches
    WHERE backend = $1 AND owner = $2 AND caller = $3 AND state = {QUEUED}
    ORDER BY create_time, batch_id LIMIT $4 FOR UPDATE SKIP LOCKED
)) AND state = {QUEUED}
RETURNING {batch_columns};

-- queued_callers (sqlite) --
SELECT DISTINCT caller FROM batches WHERE backend = $1 AND state = {QUEUED};

-- queued_callers (postgresql) --
SELECT DISTINCT caller FROM batches WHERE backend = $1 AND owner = $2 AND state = {QUEUED};

-- queued_count --
SELECT count(*) FROM batches WHERE backend = $1 AND state = {QUEUED};

-- cancelling (sqlite) --
SELECT {batch_columns} FROM batches WHERE state = {CANCELLING}
ORDER BY create_time, batch_id LIMIT $1;

-- cancelling (postgresql) --
SELECT {batch_columns} FROM batches WHERE owner = $1 AND state = {CANCELLING}
ORDER BY create_time, batch_id LIMIT $2;

-- ---------------------------------------------------------------------------------------
-- Scheduled batches
-- ---------------------------------------------------------------------------------------

-- promote_due (sqlite) --
-- SCHEDULED batches whose send_after is not after $1 wait QUEUED from now ($2).
UPDATE batches SET state = {QUEUED}, update_time = $2
WHERE state = {SCHEDULED} AND send_after <= $1
RETURNING backend, caller;

-- promote_due (postgresql) --
-- As SQLite's, for the batches of owner $2.
UPDATE batches SET state = {QUEUED}, update_time = extract(epoch FROM clock_timestamp())
WHERE owner = $2 AND state = {SCHEDULED} AND send_after <= $1
RETURNING backend, caller;

-- next_scheduled (sqlite) --
SELECT min(send_after) FROM batches WHERE state = {SCHEDULED};

-- next_scheduled (postgresql) --
SELECT min(send_after) FROM batches WHERE owner = $1 AND state = {SCHEDULED};

-- ---------------------------------------------------------------------------------------
-- Recall
-- ---------------------------------------------------------------------------------------

-- original_for_recall (sqlite) --
SELECT state, recalled_by FROM batches WHERE batch_id = $1;

-- original_for_recall (postgresql) --
-- Locked: two recalls of one batch at once, the second finds the first's.
SELECT state, recalled_by FROM batches WHERE batch_id = $1 FOR UPDATE;

-- mark_recalled --
UPDATE batches SET recalled_by = $2 WHERE batch_id = $1 AND recalled_by = '';

-- outcome_pages --
-- A batch's outcome pages, in the order they were recorded (stepped, or by a cursor).
SELECT data FROM outcomes WHERE batch_id = $1 ORDER BY seq;

-- insert_recall_keys --
INSERT INTO recall_keys (batch_id, page, keys) VALUES ($1, $2, $3);

-- recall_key_pages --
SELECT page, keys FROM recall_keys WHERE batch_id = $1 AND page BETWEEN $2 AND $3 ORDER BY page;

-- ---------------------------------------------------------------------------------------
-- Retention
-- ---------------------------------------------------------------------------------------

-- ended_batches (sqlite) --
SELECT batch_id FROM batches WHERE end_time IS NOT NULL AND end_time < $1;

-- delete_batch (sqlite) --
-- Batch $1 and all that is its.
DELETE FROM outcomes WHERE batch_id = $1;
DELETE FROM chunks WHERE batch_id = $1;
DELETE FROM recipient_pages WHERE batch_id = $1;
DELETE FROM batch_lists WHERE batch_id = $1;
DELETE FROM recall_keys WHERE batch_id = $1;
DELETE FROM batches WHERE batch_id = $1;

-- purge_webhook_events --
-- What is left of the events of batches that ended before $1 (purged with them).
DELETE FROM webhook_events WHERE create_time < $1;

-- delete_ended_batches (postgresql) --
DELETE FROM batches WHERE end_time IS NOT NULL AND end_time < $1 RETURNING batch_id;

-- delete_batch_rows (postgresql) --
-- All that is the batches $1's (their own rows are deleted by delete_ended_batches).
DELETE FROM outcomes WHERE batch_id = ANY($1);
DELETE FROM chunks WHERE batch_id = ANY($1);
DELETE FROM recipient_pages WHERE batch_id = ANY($1);
DELETE FROM batch_lists WHERE batch_id = ANY($1);
DELETE FROM recall_keys WHERE batch_id = ANY($1);

-- old_lists --
-- Lists created before $1; a list that a stored batch reads stays until that batch goes.
SELECT list_id FROM recipient_lists l WHERE create_time < $1
    AND NOT EXISTS (SELECT 1 FROM batch_lists b WHERE b.list_key = l.list_key);

-- ---------------------------------------------------------------------------------------
-- The webhook outbox (CONTRACT.md rule 28)
-- ---------------------------------------------------------------------------------------

-- insert_webhook_event (sqlite) --
-- Event $1 for endpoint $2 of batch $4, which ended at $5: due at once.
INSERT INTO webhook_events (event_id, url, type, batch_id, create_time, next_attempt)
VALUES ($1, $2, $3, $4, $5, $5);

-- webhook_event_due (sqlite) --
-- Whether endpoint $1 has an event due at $2 (read first: a claim is a write).
SELECT 1 FROM webhook_events WHERE url = $1 AND next_attempt <= $2 LIMIT 1;

-- webhook_event_due (postgresql) --
SELECT 1 FROM webhook_events
WHERE url = $1 AND next_attempt <= extract(epoch FROM clock_timestamp()) LIMIT 1;

-- claim_webhook_events (sqlite) --
-- Up to $3 events of endpoint $1 due at $2, oldest due first: each one's attempt counted
-- (the count fences the attempt's later writes) and not due again before $2 + $4 (its
-- lease).
UPDATE webhook_events SET attempts = attempts + 1, next_attempt = $2 + $4
WHERE url = $1 AND event_id IN (
    SELECT event_id FROM webhook_events WHERE url = $1 AND next_attempt <= $2
    ORDER BY next_attempt LIMIT $3
)
RETURNING event_id, url, type, batch_id, create_time, attempts, body, $2;

-- claim_webhook_events (postgresql) --
-- As SQLite's ($2: the limit, $3: the lease), by the database's clock; replicas claiming
-- at once take different events (SKIP LOCKED), and an event claimed by one is not due for
-- the others until its lease ends.
WITH due AS (
    SELECT event_id FROM webhook_events
    WHERE url = $1 AND next_attempt <= extract(epoch FROM clock_timestamp())
    ORDER BY next_attempt LIMIT $2 FOR UPDATE SKIP LOCKED
)
UPDATE webhook_events e SET attempts = e.attempts + 1,
    next_attempt = extract(epoch FROM clock_timestamp()) + $3
FROM due WHERE e.url = $1 AND e.event_id = due.event_id
RETURNING e.event_id, e.url, e.type, e.batch_id, e.create_time, e.attempts, e.body,
    extract(epoch FROM clock_timestamp());

-- fix_webhook_body --
-- Event $1's body for every endpoint, unless an attempt fixed it already: the body kept.
UPDATE webhook_events SET body = coalesce(body, $2) WHERE event_id = $1 RETURNING body;

-- retry_webhook_event (sqlite) --
-- Attempt $3 of event $1 for endpoint $2 failed: due again at $4, unless claimed since.
UPDATE webhook_events SET next_attempt = $4 WHERE event_id = $1 AND url = $2 AND attempts = $3;

-- retry_webhook_event (postgresql) --
-- As SQLite's, due again $4 seconds from now by the database's clock.
UPDATE webhook_events SET next_attempt = extract(epoch FROM clock_timestamp()) + $4
WHERE event_id = $1 AND url = $2 AND attempts = $3;

-- delete_webhook_event --
DELETE FROM webhook_events WHERE event_id = $1 AND url = $2;

-- pending_webhook_events --
SELECT count(*) FROM webhook_events;

-- ---------------------------------------------------------------------------------------
-- Recipient lists
-- ---------------------------------------------------------------------------------------

-- list --
SELECT {list_columns} FROM recipient_lists WHERE list_id = $1;

-- list_by_request --
SELECT {list_columns} FROM recipient_lists WHERE caller = $1 AND request_id = $2;

-- list_key --
SELECT list_key FROM recipient_lists WHERE list_id = $1;

-- create_list --
INSERT INTO recipient_lists ({list_columns}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11);

-- unfinished_list (sqlite) --
SELECT list_key, count, received FROM recipient_lists WHERE list_id = $1 AND ready_time IS NULL;

-- unfinished_list (postgresql) --
-- Locked: one page of a list at a time.
SELECT list_key, count, received FROM recipient_lists WHERE list_id = $1 AND ready_time IS NULL
FOR UPDATE;

-- add_member (sqlite) --
-- The unique index decides what is new: the statement's count of changes says it.
INSERT OR IGNORE INTO list_members (list_key, recipient_id) VALUES ($1, $2);

-- add_members (postgresql) --
-- The unique index decides what is new: the ids it let in come back. Within the page, the
-- first occurrence of an id is the one that counts.
INSERT INTO list_members (list_key, recipient_id)
SELECT $1, id FROM unnest($2::text[]) WITH ORDINALITY AS page(id, position)
ORDER BY position
ON CONFLICT DO NOTHING RETURNING recipient_id;

-- list_page --
SELECT ids, indexes FROM list_pages WHERE list_key = $1 AND page = $2;

-- put_list_page --
INSERT INTO list_pages (list_key, page, ids, indexes) VALUES ($1, $2, $3, $4)
ON CONFLICT (list_key, page) DO UPDATE SET ids = excluded.ids, indexes = excluded.indexes;

-- count_list --
UPDATE recipient_lists SET count = $2, received = $3 WHERE list_key = $1;

-- finish_list --
UPDATE recipient_lists SET request_id = $2, fingerprint = $3, widest_id = $4,
    widest_index = $5, ready_time = $6, longest = $7
WHERE list_id = $1 RETURNING {list_columns};

-- ready_list_key (sqlite) --
SELECT list_key FROM recipient_lists WHERE list_id = $1 AND ready_time IS NOT NULL;

-- ready_list_key (postgresql) --
SELECT list_key FROM recipient_lists WHERE list_id = $1 AND ready_time IS NOT NULL
FOR KEY SHARE;

-- link_list --
INSERT INTO batch_lists (batch_id, list_key) VALUES ($1, $2);

-- last_member (sqlite) --
-- The $2-th member of list $1, by id: where the next step of deletes ends.
SELECT recipient_id FROM list_members WHERE list_key = $1 ORDER BY recipient_id LIMIT 1 OFFSET $2;

-- delete_members (sqlite) --
DELETE FROM list_members WHERE list_key = $1;

-- delete_members_to (sqlite) --
DELETE FROM list_members WHERE list_key = $1 AND recipient_id <= $2;

-- delete_list_members (postgresql) --
-- The unique index has done its work once the list is finished.
DELETE FROM list_members WHERE list_key = (SELECT list_key FROM recipient_lists WHERE list_id = $1);

-- delete_list --
DELETE FROM recipient_lists WHERE list_id = $1 RETURNING list_key;

-- delete_list_rows --
DELETE FROM list_members WHERE list_key = $1;
DELETE FROM list_pages WHERE list_key = $1;

-- ---------------------------------------------------------------------------------------
-- Migrations (PostgreSQL; SQLite's version is a pragma)
-- ---------------------------------------------------------------------------------------

-- search_path (postgresql) --
SHOW search_path;

-- current_schema (postgresql) --
SELECT current_schema();

-- advisory_lock (postgresql) --
-- The transaction's lock on the name $1 (a migration's, per schema; a list's request_id).
SELECT pg_advisory_xact_lock(hashtext($1));

-- schema_version_table (postgresql) --
CREATE TABLE IF NOT EXISTS schema_version (version integer);

-- schema_version (postgresql) --
SELECT coalesce(max(version), 0) FROM schema_version;

-- set_schema_version (postgresql) --
INSERT INTO schema_version VALUES ($1);
