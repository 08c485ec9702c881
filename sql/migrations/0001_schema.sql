-- WhatsNext schema: projects, tasks, jobs with their dependencies, workers, history, artifacts.
-- depends:

CREATE TABLE projects (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    description text NOT NULL DEFAULT '',
    status      text NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'ARCHIVED')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tasks (
    id                    bigserial PRIMARY KEY,
    project_id            bigint NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name                  text NOT NULL,
    required_cpu          integer NOT NULL DEFAULT 1 CHECK (required_cpu >= 0),
    required_accelerators integer NOT NULL DEFAULT 0 CHECK (required_accelerators >= 0),
    required_tags         text[] NOT NULL DEFAULT '{}',
    command               text,
    defaults              jsonb NOT NULL DEFAULT '{}',
    max_attempts          integer NOT NULL DEFAULT 1 CHECK (max_attempts >= 1),
    retry_delay           double precision NOT NULL DEFAULT 0 CHECK (retry_delay >= 0),
    timeout               double precision CHECK (timeout > 0),
    created_at            timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, name)
);

CREATE TABLE workers (
    id            bigserial PRIMARY KEY,
    project_id    bigint REFERENCES projects (id) ON DELETE CASCADE,
    name          text NOT NULL,
    entity        text NOT NULL DEFAULT '',
    host          text NOT NULL DEFAULT '',
    pid           integer,
    cpu           integer NOT NULL DEFAULT 0,
    accelerators  integer NOT NULL DEFAULT 0,
    tags          text[] NOT NULL DEFAULT '{}',
    status        text NOT NULL DEFAULT 'ONLINE' CHECK (status IN ('ONLINE', 'OFFLINE')),
    registered_at timestamptz NOT NULL DEFAULT now(),
    last_seen     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE jobs (
    id                    bigserial PRIMARY KEY,
    project_id            bigint NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    task_id               bigint NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    name                  text NOT NULL,
    parameters            jsonb NOT NULL DEFAULT '{}',
    priority              integer NOT NULL DEFAULT 0,
    status                text NOT NULL DEFAULT 'PENDING'
                          CHECK (status IN ('PENDING', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED', 'BLOCKED')),
    unmet_deps            integer NOT NULL DEFAULT 0,
    required_cpu          integer NOT NULL DEFAULT 1,
    required_accelerators integer NOT NULL DEFAULT 0,
    required_tags         text[] NOT NULL DEFAULT '{}',
    attempt               integer NOT NULL DEFAULT 0,
    attempt_base          integer NOT NULL DEFAULT 0,
    max_attempts          integer NOT NULL DEFAULT 1,
    retry_delay           double precision NOT NULL DEFAULT 0,
    timeout               double precision,
    available_at          timestamptz NOT NULL DEFAULT now(),
    worker_id             bigint REFERENCES workers (id) ON DELETE SET NULL,
    worker_name           text,
    lease_expires_at      timestamptz,
    cancel_requested      boolean NOT NULL DEFAULT false,
    created_at            timestamptz NOT NULL DEFAULT now(),
    started_at            timestamptz,
    finished_at           timestamptz,
    exit_code             integer,
    error                 text,
    result                jsonb,
    log_tail              text,
    duration              double precision,
    blocked_by            bigint
);

-- What the claim reads: eligible jobs of a project in hand-out order.
CREATE INDEX jobs_eligible ON jobs (project_id, priority DESC, id)
    WHERE status = 'PENDING' AND unmet_deps = 0;
-- What the reaper reads.
CREATE INDEX jobs_running_lease ON jobs (lease_expires_at) WHERE status = 'RUNNING';
CREATE INDEX jobs_worker ON jobs (worker_id) WHERE status = 'RUNNING';
CREATE INDEX jobs_project_status ON jobs (project_id, status, id);

CREATE TABLE job_dependencies (
    job_id     bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    depends_on bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    PRIMARY KEY (job_id, depends_on)
);
CREATE INDEX job_dependencies_upstream ON job_dependencies (depends_on);

-- Append-only history: every status change of every job.
CREATE TABLE job_events (
    id         bigserial PRIMARY KEY,
    job_id     bigint NOT NULL,
    project_id bigint NOT NULL,
    status     text NOT NULL,
    attempt    integer NOT NULL DEFAULT 0,
    worker_id  bigint,
    reason     text,
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_events_job ON job_events (job_id, id);

CREATE TABLE artifacts (
    id          bigserial PRIMARY KEY,
    job_id      bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    project_id  bigint NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    direction   text NOT NULL CHECK (direction IN ('in', 'out')),
    uri         text NOT NULL,
    size        bigint,
    sha256      text,
    modified_at timestamptz,
    missing     boolean NOT NULL DEFAULT false,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX artifacts_job ON artifacts (job_id);
CREATE INDEX artifacts_uri ON artifacts (project_id, uri);

CREATE TABLE job_logs (
    id      bigserial PRIMARY KEY,
    job_id  bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt integer NOT NULL,
    line    text NOT NULL,
    at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_logs_job ON job_logs (job_id, id);
