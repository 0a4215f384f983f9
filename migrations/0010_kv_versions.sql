-- Every KV entry carries a version: a new, larger number on every write of its key, from
-- one sequence, so a version is never reused (not even after a delete and a re-create)
-- and a check-and-set against it cannot mistake a new value for an old one.

CREATE SEQUENCE kv_versions;

ALTER TABLE kv_entries ADD COLUMN version bigint NOT NULL DEFAULT nextval('kv_versions');
