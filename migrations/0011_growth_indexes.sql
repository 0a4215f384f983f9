-- Indexes for what grows: a delete of a parent row looks up its children by the foreign
-- key's columns (to cascade, or to set them NULL), and without an index each such delete
-- reads the whole child table. Every foreign key whose columns no index leads with gets
-- one here, except those into `trigger_kinds`, whose rows come from migrations and are
-- never deleted.

-- Deleting a trigger cascades to its outbox rows: the outbox can hold a large backlog of
-- rows due later (retries), and the delete must not read all of it.
CREATE INDEX outbox_trigger_idx ON outbox (trigger_id);

-- Deleting a script cascades to the triggers that run it.
CREATE INDEX triggers_script_idx ON triggers (script_id);

-- Deleting a user cascades to the triggers they registered.
CREATE INDEX triggers_registered_by_idx ON triggers (registered_by_principal);

-- Deleting an app cascades to its triggers; `triggers_app_kind_enabled_idx` holds only the
-- enabled ones, so it cannot find the disabled.
CREATE INDEX triggers_app_idx ON triggers (app_id);

-- Deleting a trigger sets its dead letters' `trigger_id` to NULL.
CREATE INDEX dead_letters_trigger_idx ON dead_letters (trigger_id);

-- Deleting an app cascades to its dead letters, resolved ones included, which
-- `dead_letters_unresolved_idx` does not hold. In the list's order, so it also serves the
-- list of all of an app's dead letters, newest first (the unresolved ones have theirs).
CREATE INDEX dead_letters_app_failed_idx ON dead_letters (app_id, failed_at DESC, id DESC);

-- Deleting an app cascades to the API tokens limited to it. Most tokens (every login
-- session) have no app: only the others are indexed.
CREATE INDEX api_tokens_app_idx ON api_tokens (app_id) WHERE app_id IS NOT NULL;

-- A change finds the triggers that watch its collection: those whose glob is the
-- collection's name (an equality lookup) and those whose glob ends in `*` (a prefix), of
-- which an app has few. Without these, every change read and locked every trigger of its
-- kind in the app, whatever collection each watched.
CREATE INDEX kv_trigger_details_glob_idx ON kv_trigger_details (collection_glob);
CREATE INDEX kv_trigger_details_prefix_idx ON kv_trigger_details (trigger_id)
    WHERE collection_glob LIKE '%*';
CREATE INDEX files_trigger_details_glob_idx ON files_trigger_details (collection_glob);
CREATE INDEX files_trigger_details_prefix_idx ON files_trigger_details (trigger_id)
    WHERE collection_glob LIKE '%*';

-- Left out on purpose: an index on `outbox.claimed_by` (or on `claimed_until`) for
-- `release`. A claim sets both columns; while no index holds either, a claim is a HOT
-- update that writes no index entry, and with one every claim writes an entry into every
-- outbox index (measured: claims went from almost all HOT to none, and inserts into the
-- outbox slowed by about a tenth). `release` runs once when a dispatcher stops.
-- `next_due_in` needs no such index either: it walks `outbox_due_idx` from the oldest row
-- to the first unclaimed one (see `outbox/store.rs`).
