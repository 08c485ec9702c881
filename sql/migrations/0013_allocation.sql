-- Compute that comes when there is work: allocation queues (where and how workers are started
-- for some projects' demand: a SLURM partition, a RUN:AI project), the allocations submitted for
-- them, and the lease of the one loop that submits for a queue at a time.
-- depends: 0012_preemption

CREATE TABLE alloc_queues (
    id                     bigserial PRIMARY KEY,
    name                   text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    backend                text NOT NULL CHECK (backend IN ('slurm', 'runai')),
    -- The projects whose demand it serves (their workers serve them all).
    project_ids            bigint[] NOT NULL CHECK (cardinality(project_ids) >= 1),
    worker_args            text NOT NULL DEFAULT '',
    time_limit             double precision NOT NULL CHECK (time_limit > 0),
    max_workers            integer NOT NULL CHECK (max_workers >= 1),
    workers_per_alloc      integer NOT NULL DEFAULT 1 CHECK (workers_per_alloc >= 1),
    idle_timeout           double precision NOT NULL DEFAULT 300 CHECK (idle_timeout > 0),
    max_submits_per_minute integer NOT NULL DEFAULT 4 CHECK (max_submits_per_minute >= 1),
    -- Backend options: partition, account, gpus_per_worker, cpus_per_worker, sbatch_args, setup,
    -- runai_project, image, ... (documented with the CLI).
    options                jsonb NOT NULL DEFAULT '{}',
    paused                 boolean NOT NULL DEFAULT false,
    last_error             text,
    last_error_at          timestamptz,
    -- The loop that submits for this queue now (one at a time): who, and until when.
    loop_holder            text,
    loop_expires_at        timestamptz,
    created_by             text,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE allocations (
    id            bigserial PRIMARY KEY,
    queue_id      bigint NOT NULL REFERENCES alloc_queues (id) ON DELETE CASCADE,
    -- The scheduler's handle: a SLURM job id, a RUN:AI workload name.
    external_id   text,
    name          text NOT NULL,
    state         text NOT NULL DEFAULT 'QUEUED'
                  CHECK (state IN ('QUEUED', 'RUNNING', 'FINISHED', 'FAILED', 'CANCELLED')),
    -- The scheduler's reason for the state (e.g. SLURM's Resources, Priority), or why it failed.
    reason        text,
    workers       integer NOT NULL DEFAULT 1 CHECK (workers >= 1),
    time_limit    double precision NOT NULL,
    -- The demand it was submitted for: {cpu, gpus, tags, timeout, jobs}.
    shape         jsonb NOT NULL DEFAULT '{}',
    submitted_at  timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    ended_at      timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX allocations_queue_state ON allocations (queue_id, state);
CREATE UNIQUE INDEX allocations_external ON allocations (queue_id, external_id) WHERE external_id IS NOT NULL;
