-- The KV service: JSON values keyed by (app, collection, key), so isolation between apps
-- lives in the primary key itself.

CREATE TABLE kv_entries (
    app_id     uuid        NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    -- Byte order ("C") for both, so paging by key is plain keyset paging over the primary
    -- key index, the same order the in-memory implementation and Rust strings use.
    -- Mirrors picloud_shared::CollectionName: 1..=128 of ASCII letters, digits, _ - . :
    collection text        COLLATE "C" NOT NULL
                           CONSTRAINT kv_entries_collection_check
                           CHECK (collection ~ '^[A-Za-z0-9_.:-]{1,128}$'),
    -- Mirrors picloud_shared::KvKey: 1..=512 bytes of UTF-8, no control characters.
    key        text        COLLATE "C" NOT NULL
                           CONSTRAINT kv_entries_key_check
                           CHECK (octet_length(key) BETWEEN 1 AND 512
                                  AND key !~ '[\u0001-\u001f\u007f-\u009f]'),
    -- The 64 KiB limit is enforced by the service on the value's compact JSON, which is
    -- not the form jsonb prints, so it has no CHECK here.
    value      jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app_id, collection, key)
);
