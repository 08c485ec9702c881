-- Sweeps and pipelines: dependencies with a condition (on a job, or on every member a group had
-- when the dependant was submitted), submissions that never double (a unique key per project),
-- task versions (a job keeps the command it was submitted with), projects that refuse parameters
-- no placeholder uses, and jobs that start later (not_before or delay at submission).
-- depends: 0013_allocation

-- When a dependency is met: 'success' (the upstream COMPLETED), 'finished' (it reached a state it
-- does not leave by itself: COMPLETED, FAILED, CANCELLED or BLOCKED) or 'failure' (it FAILED or
-- was CANCELLED). A dependency that can no longer be met blocks the dependant.
ALTER TABLE job_dependencies
    ADD COLUMN condition text NOT NULL DEFAULT 'success'
               CHECK (condition IN ('success', 'finished', 'failure'));

-- A batch entry's conditions, one per dep_ids / dep_idx element (NULL: all 'success'), and the
-- groups it waits for (names, each with its condition).
ALTER TYPE wn_job_entry ADD ATTRIBUTE dep_ids_on   text[],
                        ADD ATTRIBUTE dep_idx_on   text[],
                        ADD ATTRIBUTE dep_groups   text[],
                        ADD ATTRIBUTE dep_groups_on text[],
                        ADD ATTRIBUTE unique_key   text,
                        -- A delayed start: not before this time, or this many seconds from now.
                        ADD ATTRIBUTE not_before   timestamptz,
                        ADD ATTRIBUTE delay        double precision;

-- A job submitted again with the same key (in the same project) is the job already there.
ALTER TABLE jobs ADD COLUMN unique_key text CHECK (length(unique_key) BETWEEN 1 AND 400);
CREATE UNIQUE INDEX jobs_unique_key ON jobs (project_id, unique_key) WHERE unique_key IS NOT NULL;

-- Task versions: what a claim reads of a task (command template, defaults, shell, placeholders)
-- as it was when each job was submitted. tasks keeps the current version; task_versions every
-- version a job may still refer to: each version before the current one (written when the task
-- changes) and the first of each task that existed before versions.
ALTER TABLE tasks ADD COLUMN version integer NOT NULL DEFAULT 1 CHECK (version >= 1),
                  ADD COLUMN updated_at timestamptz;
CREATE TABLE task_versions (
    task_id      bigint NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    version      integer NOT NULL,
    command      text,
    defaults     jsonb NOT NULL DEFAULT '{}',
    shell        boolean NOT NULL DEFAULT false,
    placeholders text[],
    -- The task's other settings at that version (resources, retries, ...), for the history.
    settings     jsonb NOT NULL DEFAULT '{}',
    actor        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, version)
);
INSERT INTO task_versions (task_id, version, command, defaults, shell, placeholders, created_at)
SELECT id, 1, command, defaults, shell, placeholders, created_at FROM tasks;
-- Existing jobs were submitted against version 1 (no rewrite: a constant default).
ALTER TABLE jobs ADD COLUMN task_version integer NOT NULL DEFAULT 1;

-- A strict-parameters project refuses a job with a parameter its task's command never uses
-- (else the answer warns).
ALTER TABLE projects ADD COLUMN strict_parameters boolean NOT NULL DEFAULT false;
