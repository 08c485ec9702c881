-- One pool shared by many projects: each project's share of the pool (a weight), its quotas, the
-- concurrency keys of tasks and jobs, and each project's recent usage of the pool.
-- depends: 0008_ui_sessions

-- share: the project's weight when claims choose between projects (fair share). max_gpus,
-- max_cpus, max_running: what the project's RUNNING jobs may hold at once across every worker
-- (NULL: no quota).
ALTER TABLE projects ADD COLUMN share       double precision NOT NULL DEFAULT 1 CHECK (share > 0),
                     ADD COLUMN max_gpus    integer CHECK (max_gpus >= 0),
                     ADD COLUMN max_cpus    integer CHECK (max_cpus >= 0),
                     ADD COLUMN max_running integer CHECK (max_running >= 0);

-- At most concurrency_limit jobs with one concurrency_key run at once in a project (a licence
-- server, a dataset). A task's key and limit are its jobs' defaults.
ALTER TABLE tasks ADD COLUMN concurrency_key   text CHECK (length(concurrency_key) BETWEEN 1 AND 200),
                  ADD COLUMN concurrency_limit integer CHECK (concurrency_limit >= 1),
                  ADD CHECK ((concurrency_key IS NULL) = (concurrency_limit IS NULL));
ALTER TABLE jobs ADD COLUMN concurrency_key   text,
                 ADD COLUMN concurrency_limit integer CHECK (concurrency_limit >= 1),
                 ADD CHECK ((concurrency_key IS NULL) = (concurrency_limit IS NULL));
ALTER TYPE wn_job_entry ADD ATTRIBUTE concurrency_key text,
                        ADD ATTRIBUTE concurrency_limit integer;
CREATE INDEX jobs_running_key ON jobs (project_id, concurrency_key)
    WHERE status = 'RUNNING' AND concurrency_key IS NOT NULL;

-- Each project's usage of the pool, decayed with the pool's half-life: the value as of
-- updated_at (read as value * 2^-(age / half_life)). An attempt adds its weighted seconds when it
-- ends, so pruning jobs never changes a project's usage. Several rows per project (stripe: the
-- writing backend's slot) keep attempts ending at once in different sessions from waiting on one
-- row lock; a project's usage is the sum of its rows.
--   usage        weighted seconds (an attempt weighs its GPUs, or its CPUs / 8 when that is more)
--   gpu_seconds  GPU-seconds; cpu_seconds: CPU-seconds; attempts: attempts ended
CREATE TABLE project_usage (
    project_id  bigint NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    stripe      smallint NOT NULL,
    usage       double precision NOT NULL DEFAULT 0,
    gpu_seconds double precision NOT NULL DEFAULT 0,
    cpu_seconds double precision NOT NULL DEFAULT 0,
    attempts    double precision NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, stripe)
);

-- Settings of the pool that every server must agree on (one row): the half-life of usage, in
-- seconds. A server writes its --fair-share-half-life here at start.
CREATE TABLE pool_settings (
    id        integer PRIMARY KEY CHECK (id = 1),
    half_life double precision NOT NULL DEFAULT 3600 CHECK (half_life > 0)
);
INSERT INTO pool_settings (id) VALUES (1);

-- A worker may serve several projects: project_ids lists them (NULL: the one of project_id), and
-- all_projects marks a worker serving every project its token may work on.
ALTER TABLE workers ADD COLUMN project_ids  bigint[],
                    ADD COLUMN all_projects boolean NOT NULL DEFAULT false;
