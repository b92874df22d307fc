-- importd's own tables: the durable job record and the rejected rows of each job.
CREATE SCHEMA IF NOT EXISTS importd;

CREATE TABLE importd.jobs (
    id                text PRIMARY KEY,
    task              text NOT NULL DEFAULT 'import.csv',
    target_table      text,
    file_path         text,
    file_size         bigint,
    checksum          text,
    state             text NOT NULL DEFAULT 'PENDING'
                      CHECK (state IN ('PENDING', 'STARTED', 'RETRY', 'SUCCESS', 'FAILURE', 'CANCELLED')),
    priority          smallint NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 10),
    mode              text NOT NULL DEFAULT 'atomic' CHECK (mode IN ('atomic', 'resumable')),
    options           jsonb NOT NULL DEFAULT '{}'::jsonb,
    attempts          integer NOT NULL DEFAULT 0,
    rows_imported     bigint NOT NULL DEFAULT 0,
    rows_rejected     bigint NOT NULL DEFAULT 0,
    checkpoint_offset bigint NOT NULL DEFAULT 0,
    checkpoint_rows   bigint NOT NULL DEFAULT 0,
    error             text,
    idempotency_key   text UNIQUE,
    cancel_requested  boolean NOT NULL DEFAULT false,
    worker            text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- The job list pages newest first by (created_at, id); the state filter uses the second index.
CREATE INDEX jobs_created_idx ON importd.jobs (created_at DESC, id DESC);
CREATE INDEX jobs_state_created_idx ON importd.jobs (state, created_at DESC, id DESC);

CREATE TABLE importd.rejected_rows (
    id          bigserial PRIMARY KEY,
    job_id      text NOT NULL REFERENCES importd.jobs (id) ON DELETE CASCADE,
    line_number bigint NOT NULL,
    column_name text,
    value       text,
    reason      text NOT NULL
);

CREATE INDEX rejected_rows_job_idx ON importd.rejected_rows (job_id, line_number, id);
