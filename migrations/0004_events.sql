-- The event core: triggers (Layout E: one parent table, one details table per kind), the
-- outbox every kind dispatches through, dead letters, and abandoned synchronous results.

CREATE TABLE triggers (
    id                      uuid        PRIMARY KEY,
    app_id                  uuid        NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    -- Adding a kind widens this CHECK and adds a <kind>_trigger_details table.
    kind                    text        NOT NULL
                                        CONSTRAINT triggers_kind_check
                                        CHECK (kind IN ('kv', 'dead_letter')),
    script_id               uuid        NOT NULL REFERENCES scripts (id) ON DELETE CASCADE,
    enabled                 boolean     NOT NULL DEFAULT true,
    -- The triggered script runs as this user (their current roles in the trigger's app).
    registered_by_principal uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    max_attempts            integer     NOT NULL
                                        CONSTRAINT triggers_max_attempts_check
                                        CHECK (max_attempts BETWEEN 1 AND 100),
    backoff_base_ms         bigint      NOT NULL
                                        CONSTRAINT triggers_backoff_base_check
                                        CHECK (backoff_base_ms >= 0),
    backoff_max_ms          bigint      NOT NULL
                                        CONSTRAINT triggers_backoff_max_check
                                        CHECK (backoff_max_ms >= backoff_base_ms),
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);

-- Fan-out reads the enabled triggers of one app and kind on every emitted event.
CREATE INDEX triggers_app_kind_enabled_idx ON triggers (app_id, kind) WHERE enabled;

CREATE TABLE kv_trigger_details (
    trigger_id      uuid   PRIMARY KEY REFERENCES triggers (id) ON DELETE CASCADE,
    -- '*' (every collection), '<prefix>*' such as 'orders:*' (every collection starting
    -- with 'orders:'), or an exact collection name (at most 128 characters, plus the '*');
    -- matched by picloud_shared::collection_matches.
    collection_glob text   NOT NULL
                           CONSTRAINT kv_trigger_details_glob_length
                           CHECK (char_length(collection_glob) BETWEEN 1 AND 129),
    ops             text[] NOT NULL
                           CONSTRAINT kv_trigger_details_ops_check
                           CHECK (cardinality(ops) >= 1 AND ops <@ ARRAY['set', 'delete']::text[])
);

CREATE TABLE dead_letter_trigger_details (
    trigger_id   uuid   PRIMARY KEY REFERENCES triggers (id) ON DELETE CASCADE,
    -- Which failures it handles: dead letters of triggers of these kinds.
    source_kinds text[] NOT NULL
                        CONSTRAINT dead_letter_trigger_details_kinds_check
                        CHECK (cardinality(source_kinds) >= 1
                               AND source_kinds <@ ARRAY['kv']::text[])
);

-- One shape for every kind: what to run, with which event, when.
CREATE TABLE outbox (
    id             uuid        PRIMARY KEY,
    app_id         uuid        NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    trigger_id     uuid        NOT NULL REFERENCES triggers (id) ON DELETE CASCADE,
    script_id      uuid        NOT NULL,
    event          jsonb       NOT NULL,
    depth          integer     NOT NULL CONSTRAINT outbox_depth_check CHECK (depth >= 1),
    attempts       integer     NOT NULL DEFAULT 0 CONSTRAINT outbox_attempts_check CHECK (attempts >= 0),
    due_at         timestamptz NOT NULL DEFAULT now(),
    -- A claim is a lease: a dispatcher that dies leaves its rows to come back after it.
    claimed_until  timestamptz,
    claimed_by     text,
    last_error     text,
    -- Set for a synchronous HTTP invocation routed through the outbox: never retried.
    reply_to       uuid,
    -- For a dead_letter trigger's delivery: the dead letter it handles.
    dead_letter_id uuid,
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- Claiming: the due rows that nobody holds, oldest first.
CREATE INDEX outbox_due_idx ON outbox (due_at);

CREATE TABLE dead_letters (
    id           uuid        PRIMARY KEY,
    app_id       uuid        NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    -- NULL for an event refused before any trigger ran it (the depth limit).
    trigger_id   uuid        REFERENCES triggers (id) ON DELETE SET NULL,
    trigger_kind text        NOT NULL
                             CONSTRAINT dead_letters_trigger_kind_check
                             CHECK (trigger_kind IN ('kv', 'dead_letter')),
    script_id    uuid,
    event        jsonb       NOT NULL,
    depth        integer     NOT NULL,
    attempts     integer     NOT NULL,
    last_error   text        NOT NULL,
    failed_at    timestamptz NOT NULL DEFAULT now(),
    resolution   text        CONSTRAINT dead_letters_resolution_check
                             CHECK (resolution IN ('replayed', 'ignored', 'handled_by_script',
                                                   'handler_failed')),
    resolved_at  timestamptz,
    CONSTRAINT dead_letters_resolved_shape
        CHECK ((resolution IS NULL) = (resolved_at IS NULL))
);

-- The dashboard badge: unresolved dead letters per app.
CREATE INDEX dead_letters_unresolved_idx ON dead_letters (app_id, failed_at DESC)
    WHERE resolution IS NULL;
-- Retention deletes dead letters resolved long enough ago; unresolved ones stay.
CREATE INDEX dead_letters_resolved_at_idx ON dead_letters (resolved_at)
    WHERE resolution IS NOT NULL;

-- A synchronous invocation whose caller had gone when the result arrived.
CREATE TABLE abandoned_executions (
    id           uuid        PRIMARY KEY,
    app_id       uuid        NOT NULL,
    script_id    uuid        NOT NULL,
    reply_to     uuid        NOT NULL,
    result       jsonb       NOT NULL,
    abandoned_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX abandoned_executions_abandoned_at_idx ON abandoned_executions (abandoned_at);

-- Triggered runs are recorded like HTTP ones, with the trigger that caused them.
ALTER TABLE execution_logs DROP CONSTRAINT execution_logs_invocation_type_check;
ALTER TABLE execution_logs ADD CONSTRAINT execution_logs_invocation_type_check
    CHECK (invocation_type IN ('http', 'trigger'));
ALTER TABLE execution_logs ADD COLUMN trigger_id uuid;
