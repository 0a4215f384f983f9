-- Foundation: apps, scripts and the execution log.

CREATE TABLE apps (
    id         uuid        PRIMARY KEY,
    -- Same rule as AppSlug: a DNS label (lowercase letters, digits, '-', 1..63 characters,
    -- not starting or ending with '-'), so a slug can later become a subdomain.
    slug       text        NOT NULL UNIQUE
                           CONSTRAINT apps_slug_format
                           CHECK (slug ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
    name       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Every instance starts with the `default` app under a fixed, well-known id so code and
-- tests can name it without a lookup.
INSERT INTO apps (id, slug, name)
VALUES ('00000000-0000-0000-0000-000000000001', 'default', 'Default');

CREATE TABLE scripts (
    id         uuid        PRIMARY KEY,
    app_id     uuid        NOT NULL REFERENCES apps (id) ON DELETE RESTRICT,
    -- Same rule as ScriptName: usable as a URL path segment.
    name       text        NOT NULL
                           CONSTRAINT scripts_name_format
                           CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$'),
    source     text        NOT NULL,
    limits     jsonb       NOT NULL DEFAULT '{}'
                           CONSTRAINT scripts_limits_object
                           CHECK (jsonb_typeof(limits) = 'object'),
    version    bigint      NOT NULL DEFAULT 1 CONSTRAINT scripts_version_positive CHECK (version >= 1),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT scripts_app_id_name_key UNIQUE (app_id, name)
);

-- No foreign keys: a run's record outlives the script (and app) it ran.
CREATE TABLE execution_logs (
    id              uuid        PRIMARY KEY,
    script_id       uuid        NOT NULL,
    app_id          uuid        NOT NULL,
    script_version  bigint,
    invocation_type text        NOT NULL
                                CONSTRAINT execution_logs_invocation_type_check
                                CHECK (invocation_type IN ('http')),
    request_id      text        NOT NULL,
    status          text        NOT NULL
                                CONSTRAINT execution_logs_status_check
                                CHECK (status IN ('success', 'script_error', 'timeout',
                                                  'resource_limit', 'overloaded',
                                                  'unavailable', 'internal')),
    http_status     int,
    duration_ms     bigint      NOT NULL,
    logs            jsonb       NOT NULL DEFAULT '[]',
    error           text,
    started_at      timestamptz NOT NULL
);

-- A script's runs, newest first, with a stable tie-break for keyset paging.
CREATE INDEX execution_logs_script_started_idx
    ON execution_logs (script_id, started_at DESC, id DESC);

-- Retention pruning deletes by age across all scripts.
CREATE INDEX execution_logs_started_idx ON execution_logs (started_at);
