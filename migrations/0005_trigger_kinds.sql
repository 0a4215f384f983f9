-- Trigger kinds as plug-ins: the kinds are rows of `trigger_kinds`, so adding one is an
-- INSERT here plus its own details table, and each details row is tied to a parent of its
-- own kind by a composite foreign key, so a mismatched row cannot exist.

CREATE TABLE trigger_kinds (
    name text PRIMARY KEY
);

INSERT INTO trigger_kinds (name) VALUES ('kv'), ('dead_letter');

ALTER TABLE triggers DROP CONSTRAINT triggers_kind_check;
ALTER TABLE triggers ADD CONSTRAINT triggers_kind_fkey
    FOREIGN KEY (kind) REFERENCES trigger_kinds (name);
-- The target of the details tables' composite foreign keys.
ALTER TABLE triggers ADD CONSTRAINT triggers_id_kind_key UNIQUE (id, kind);

ALTER TABLE dead_letters DROP CONSTRAINT dead_letters_trigger_kind_check;
ALTER TABLE dead_letters ADD CONSTRAINT dead_letters_trigger_kind_fkey
    FOREIGN KEY (trigger_kind) REFERENCES trigger_kinds (name);

ALTER TABLE kv_trigger_details
    ADD COLUMN kind text NOT NULL DEFAULT 'kv'
        CONSTRAINT kv_trigger_details_kind_check CHECK (kind = 'kv');
ALTER TABLE kv_trigger_details DROP CONSTRAINT kv_trigger_details_trigger_id_fkey;
ALTER TABLE kv_trigger_details ADD CONSTRAINT kv_trigger_details_trigger_fkey
    FOREIGN KEY (trigger_id, kind) REFERENCES triggers (id, kind) ON DELETE CASCADE;

ALTER TABLE dead_letter_trigger_details
    ADD COLUMN kind text NOT NULL DEFAULT 'dead_letter'
        CONSTRAINT dead_letter_trigger_details_kind_check CHECK (kind = 'dead_letter');
ALTER TABLE dead_letter_trigger_details DROP CONSTRAINT dead_letter_trigger_details_trigger_id_fkey;
ALTER TABLE dead_letter_trigger_details ADD CONSTRAINT dead_letter_trigger_details_trigger_fkey
    FOREIGN KEY (trigger_id, kind) REFERENCES triggers (id, kind) ON DELETE CASCADE;
