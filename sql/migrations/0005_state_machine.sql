-- One state machine for running jobs: lost work is counted apart from failures, reports are
-- idempotent, and jobs run outside the worker's host keep their external handle.
-- From here on functions live in sql/functions/ (one file each, installed at every server start);
-- migrations hold tables, types and indexes only, and are never edited once released.
-- depends: 0004_logs_artifacts

-- How many times a job may go back to the queue because its worker vanished (lease expired,
-- deregistered, claim never received) before it fails with "worker lost". Lost attempts do not
-- count against max_attempts.
ALTER TABLE tasks ADD COLUMN max_lost integer NOT NULL DEFAULT 3 CHECK (max_lost >= 0);
ALTER TABLE jobs ADD COLUMN max_lost integer NOT NULL DEFAULT 3 CHECK (max_lost >= 0),
                 ADD COLUMN lost integer NOT NULL DEFAULT 0,
                 -- The outcome reported for attempt `attempt` once it ended (COMPLETED, FAILED,
                 -- CANCELLED, PREEMPTED, LOST): a repeated report of the same outcome is answered
                 -- with the recorded status instead of a conflict.
                 ADD COLUMN last_outcome text,
                 -- When the job last became eligible (its dependencies met, requeued, retried).
                 ADD COLUMN eligible_at timestamptz,
                 -- The current attempt's handle outside the worker's host ('slurm:123',
                 -- 'runai:name') and GPU ids, as its worker reported them when the attempt started.
                 ADD COLUMN external_id text,
                 ADD COLUMN gpus integer[],
                 -- Handles of lost attempts: the next worker cancels them before running the job.
                 ADD COLUMN lost_external_ids text[] NOT NULL DEFAULT '{}';

UPDATE jobs SET eligible_at = coalesce(available_at, created_at)
 WHERE status = 'PENDING' AND unmet_deps = 0;

-- Who or what made each change (a token's name, a worker, the reaper).
ALTER TABLE job_events ADD COLUMN actor text;

-- Groups: a sweep, or any batch the user names, followed, cancelled and retried as one.
CREATE TABLE job_groups (
    id         bigserial PRIMARY KEY,
    project_id bigint NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, name)
);
ALTER TABLE jobs ADD COLUMN group_id bigint REFERENCES job_groups (id) ON DELETE SET NULL;
CREATE INDEX jobs_group ON jobs (group_id, status) WHERE group_id IS NOT NULL;

-- A strict project refuses jobs for tasks it does not have (instead of creating the task).
ALTER TABLE projects ADD COLUMN strict_tasks boolean NOT NULL DEFAULT false;
-- A task's command template is a shell command line (else an argv template).
ALTER TABLE tasks ADD COLUMN shell boolean NOT NULL DEFAULT false;

-- Artifacts the worker refused to open (a device, a FIFO, outside its roots), and why; also why
-- a file has no sha256 (past the hashing budget).
ALTER TABLE artifacts ADD COLUMN refused boolean NOT NULL DEFAULT false,
                      ADD COLUMN reason text;

-- Installed state of sql/functions: the content hash and the schema level that installed them.
CREATE TABLE wn_meta (
    key        text PRIMARY KEY,
    value      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One entry of an enqueue batch, as wn_enqueue reads it (the server maps request fields to these
-- names explicitly). Replaces wn_job_input, which had no max_lost.
DROP TYPE wn_job_input;
CREATE TYPE wn_job_entry AS (
    name text, task text, parameters jsonb, priority integer,
    required_cpu integer, required_accelerators integer, required_tags text[],
    max_attempts integer, max_lost integer, retry_delay double precision, timeout double precision,
    dep_ids bigint[], dep_idx integer[], inputs text[], outputs text[], group_id bigint
);

-- Output lines come and go fast (a job keeps its newest lines only): vacuum them early, so that
-- the space of removed lines is reused instead of growing the table.
ALTER TABLE job_logs SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000,
                          autovacuum_vacuum_cost_delay = 0);
