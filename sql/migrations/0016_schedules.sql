-- Schedules: a job the server submits itself at each tick of a cron expression (in a time zone) or
-- every N seconds. Every server runs the ticks: each one locks the due schedules it can (FOR
-- UPDATE SKIP LOCKED) and, in the transaction that queues a tick's job, moves next_run_at to the
-- following tick; a job made by a schedule records it and the tick, unique per schedule.
-- depends: 0014_sweeps

CREATE TABLE schedules (
    id              bigserial PRIMARY KEY,
    project_id      bigint NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- Exactly one of a five-field cron expression (read in `timezone`) and a period in seconds.
    cron            text CHECK (length(cron) BETWEEN 1 AND 200),
    every           integer CHECK (every >= 1),
    timezone        text NOT NULL DEFAULT 'UTC' CHECK (length(timezone) BETWEEN 1 AND 100),
    -- The job each tick submits, as POST /projects/{p}/jobs takes it.
    job             jsonb NOT NULL,
    -- skip: a tick while the last tick's job is PENDING or RUNNING makes no job.
    overlap         text NOT NULL DEFAULT 'skip' CHECK (overlap IN ('skip', 'allow')),
    paused          boolean NOT NULL DEFAULT false,
    -- The next tick (kept while paused; a resume sets the first tick after it).
    next_run_at     timestamptz NOT NULL,
    -- The tick of the last job made, and that job (no reference: retention may remove it).
    last_run_at     timestamptz,
    last_job_id     bigint,
    runs            bigint NOT NULL DEFAULT 0,
    -- Ticks skipped because the last job was unfinished (overlap skip).
    skipped         bigint NOT NULL DEFAULT 0,
    last_skipped_at timestamptz,
    -- A tick that could not submit its job (the project archived, the task refusing it ...).
    last_error      text,
    last_error_at   timestamptz,
    created_by      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, name),
    CHECK ((cron IS NULL) <> (every IS NULL))
);
-- What the servers' tick loops read: the earliest next tick, and the due schedules.
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE NOT paused;

-- The schedule that made a job and the tick it was made for: one job per tick.
ALTER TABLE jobs ADD COLUMN schedule_id bigint REFERENCES schedules (id) ON DELETE SET NULL,
                 ADD COLUMN scheduled_for timestamptz;
CREATE UNIQUE INDEX jobs_schedule_tick ON jobs (schedule_id, scheduled_for) WHERE schedule_id IS NOT NULL;
