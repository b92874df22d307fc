-- Issue 14: a resumable job resumes with a ranged read from its checkpoint, never reading the
-- committed part of its file again, and its reject file ends in the upload store.
--
-- ``checkpoint_line`` is the physical line number of the record at ``checkpoint_offset``
-- (what the run used to count by reading the file up to the offset); ``header_bytes`` is the
-- length of the header record (read alone with a bounded read on resume). Both are written by
-- the statement that moves the checkpoint, so they never disagree with it. NULL on rows
-- checkpointed before this migration: such a job resumes by counting, as before.
ALTER TABLE importd.jobs
    ADD COLUMN checkpoint_line bigint,
    ADD COLUMN header_bytes    bigint;

-- The rejected records of a resumable job's committed batches, one row per checkpoint that
-- had any, committed in the checkpoint's transaction (a run that lost its lock commits none).
-- The run that ends the job writes header + these + its own uncommitted rejects to the store
-- as the job's reject file (``job_rejects.file_path`` then holds its key).
CREATE TABLE importd.reject_chunks (
    job_id      text   NOT NULL REFERENCES importd.jobs (id) ON DELETE CASCADE,
    end_offset  bigint NOT NULL,  -- the checkpoint committed with it (end of its batch)
    records     bigint NOT NULL,  -- rejected records in data
    groups      jsonb  NOT NULL,  -- the job's error groups as of this checkpoint (cumulative)
    data        bytea  NOT NULL,  -- the records' original bytes, in file order
    PRIMARY KEY (job_id, end_offset)
);
