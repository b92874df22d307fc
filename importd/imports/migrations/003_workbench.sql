-- The import workbench (issue 16): saved column mappings per (table, header), and per job the
-- file of its rejected records (all of them, as the original CSV lines) with its errors grouped.
CREATE TABLE IF NOT EXISTS importd.mappings (
    table_name  text NOT NULL,
    header_key  text NOT NULL,          -- sha256 of the normalised header (see imports/mappings.py)
    header      jsonb NOT NULL,         -- the header's fields as the file has them
    columns     jsonb NOT NULL,         -- header name -> table column
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, header_key)
);

CREATE TABLE IF NOT EXISTS importd.job_rejects (
    job_id      text PRIMARY KEY REFERENCES importd.jobs (id) ON DELETE CASCADE,
    file_path   text NOT NULL,          -- <upload>.rejects.csv: the header, then each rejected record's bytes
    file_bytes  bigint NOT NULL DEFAULT 0,  -- bytes of it that belong to committed batches
    records     bigint NOT NULL DEFAULT 0,
    groups      jsonb NOT NULL DEFAULT '[]'::jsonb,  -- [{column, reason, count, lines}]
    updated_at  timestamptz NOT NULL DEFAULT now()
);
