-- Access: users, their roles in apps, and bearer tokens (login sessions and API tokens).

CREATE TABLE users (
    id             uuid        PRIMARY KEY,
    -- Same rule as Username: lowercase only, so 'Ada' and 'ada' can never be two accounts.
    username       text        NOT NULL
                               CONSTRAINT users_username_key UNIQUE
                               CONSTRAINT users_username_format
                               CHECK (username ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    -- argon2id, as a PHC string ($argon2id$v=19$m=…,t=…,p=…$salt$hash).
    password_hash  text        NOT NULL
                               CONSTRAINT users_password_hash_phc
                               CHECK (password_hash LIKE '$argon2id$%'),
    instance_admin boolean     NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE app_members (
    app_id     uuid        NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       text        NOT NULL
                           CONSTRAINT app_members_role_check
                           CHECK (role IN ('owner', 'developer', 'viewer')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app_id, user_id)
);

-- A user's roles are read on every authenticated request: the primary key leads with the
-- app, so this index serves the lookup by user.
CREATE INDEX app_members_user_idx ON app_members (user_id);

CREATE TABLE api_tokens (
    id           uuid        PRIMARY KEY,
    user_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text        NOT NULL
                             CONSTRAINT api_tokens_name_length
                             CHECK (char_length(name) BETWEEN 1 AND 128),
    kind         text        NOT NULL
                             CONSTRAINT api_tokens_kind_check
                             CHECK (kind IN ('session', 'api')),
    -- Only the seven scopes; a NULL element fails the containment test too.
    scopes       text[]      NOT NULL
                             CONSTRAINT api_tokens_scopes_check
                             CHECK (scopes <@ ARRAY['script:read', 'script:write',
                                                    'script:execute', 'data:read',
                                                    'data:write', 'triggers:manage',
                                                    'app:admin']::text[]),
    -- A token limited to one app dies with it.
    app_id       uuid        REFERENCES apps (id) ON DELETE CASCADE,
    -- SHA-256 of the secret; the secret itself is never stored.
    secret_hash  bytea       NOT NULL
                             CONSTRAINT api_tokens_secret_hash_key UNIQUE
                             CONSTRAINT api_tokens_secret_hash_length
                             CHECK (octet_length(secret_hash) = 32),
    -- The secret's first characters ('pc_' + 8), to recognise a token in a list.
    prefix       text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz,
    -- A login session carries every scope and no app restriction.
    CONSTRAINT api_tokens_session_shape
        CHECK (kind <> 'session' OR app_id IS NULL)
);

-- A user's tokens of one kind, newest first.
CREATE INDEX api_tokens_user_kind_created_idx
    ON api_tokens (user_id, kind, created_at DESC);

-- Scripts are public by default; this makes calling one need a token with script:execute.
ALTER TABLE scripts ADD COLUMN require_token boolean NOT NULL DEFAULT false;
