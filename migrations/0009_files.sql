-- The files service: one row per file, its bytes in the blob store under a key the server
-- chose. The row is the commit point of every write: bytes are durable before it exists,
-- and a file without its row is invisible (the sweep removes such bytes).

CREATE TABLE files (
    app_id       uuid        NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    -- Mirrors picloud_shared::CollectionName.
    collection   text        COLLATE "C" NOT NULL
                             CONSTRAINT files_collection_check
                             CHECK (collection ~ '^[A-Za-z0-9_.:-]{1,128}$'),
    -- Mirrors picloud_shared::FileName: 1..=512 bytes, no control characters (its other
    -- rules, on segments, are the service's).
    name         text        COLLATE "C" NOT NULL
                             CONSTRAINT files_name_check
                             CHECK (octet_length(name) BETWEEN 1 AND 512
                                    AND name !~ '[\u0001-\u001f\u007f-\u009f]'),
    -- Where the bytes are: a random key, never derived from the name, one per version.
    blob_key     text        NOT NULL UNIQUE
                             CONSTRAINT files_blob_key_check CHECK (blob_key ~ '^[0-9a-f]{32}$'),
    size         bigint      NOT NULL CONSTRAINT files_size_check CHECK (size >= 0),
    content_type text        NOT NULL
                             CONSTRAINT files_content_type_check
                             CHECK (octet_length(content_type) BETWEEN 1 AND 255),
    sha256       bytea       NOT NULL CONSTRAINT files_sha256_check CHECK (octet_length(sha256) = 32),
    metadata     jsonb       NOT NULL DEFAULT '{}',
    version      bigint      NOT NULL DEFAULT 1 CONSTRAINT files_version_check CHECK (version >= 1),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app_id, collection, name)
);

-- The `files` trigger kind.
INSERT INTO trigger_kinds (name) VALUES ('files');

CREATE TABLE files_trigger_details (
    trigger_id      uuid   PRIMARY KEY,
    kind            text   NOT NULL DEFAULT 'files'
                           CONSTRAINT files_trigger_details_kind_check CHECK (kind = 'files'),
    -- As kv_trigger_details.collection_glob: '*', '<prefix>*' or an exact collection name.
    collection_glob text   NOT NULL
                           CONSTRAINT files_trigger_details_glob_length
                           CHECK (char_length(collection_glob) BETWEEN 1 AND 129),
    ops             text[] NOT NULL
                           CONSTRAINT files_trigger_details_ops_check
                           CHECK (cardinality(ops) >= 1
                                  AND ops <@ ARRAY['create', 'update', 'delete']::text[]),
    CONSTRAINT files_trigger_details_trigger_fkey
        FOREIGN KEY (trigger_id, kind) REFERENCES triggers (id, kind) ON DELETE CASCADE
);

-- Failed deliveries of files triggers fan out to dead_letter triggers, as kv ones do.
ALTER TABLE dead_letter_trigger_details DROP CONSTRAINT dead_letter_trigger_details_kinds_check;
ALTER TABLE dead_letter_trigger_details ADD CONSTRAINT dead_letter_trigger_details_kinds_check
    CHECK (cardinality(source_kinds) >= 1
           AND source_kinds <@ ARRAY['kv', 'files']::text[]);
