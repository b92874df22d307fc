-- Issue 12 item 3: a replayed dead letter reopens its job; what the job was before each
-- replay is kept in ``history`` (one JSON object per replay, oldest first, each naming the
-- replay id that makes the reopening idempotent).
-- ``checkpoint_rejected`` is the rejected-row count that goes with the checkpoint (a final
-- FAILURE overwrites ``rows_rejected`` with rows counted past the checkpoint, which a
-- reopened resumable job must not count twice).
ALTER TABLE importd.jobs
    ADD COLUMN history             jsonb  NOT NULL DEFAULT '[]'::jsonb,
    ADD COLUMN checkpoint_rejected bigint NOT NULL DEFAULT 0;

UPDATE importd.jobs SET checkpoint_rejected = rows_rejected WHERE checkpoint_offset > 0;
