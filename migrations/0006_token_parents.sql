-- A token made through another API token is that token's child: it expires no later than
-- its parent (set when it is made) and is revoked with it (the revocation follows
-- `parent_id` down). Deleting a parent row deletes its children too.
ALTER TABLE api_tokens
    ADD COLUMN parent_id uuid REFERENCES api_tokens (id) ON DELETE CASCADE;

-- Revocation walks the children of a token.
CREATE INDEX api_tokens_parent_idx ON api_tokens (parent_id) WHERE parent_id IS NOT NULL;
