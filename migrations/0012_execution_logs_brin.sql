-- Retention deletes execution records by age (`started_at < cutoff`, once an hour). The
-- records arrive in time order, so a block range index finds the old ones as well as the
-- B-tree did, and it costs a run nothing: the B-tree took an entry on every insert, one
-- per run on the hot path, where this index keeps one summary per range of pages, brought
-- up to date as pages fill (autosummarize) or by vacuum.
DROP INDEX execution_logs_started_idx;
CREATE INDEX execution_logs_started_brin ON execution_logs USING brin (started_at)
    WITH (autosummarize = on);
