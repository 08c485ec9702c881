-- Access tokens: a name, a role, the projects they cover (NULL: all), an expiry, revocation.
-- Only the SHA-256 of a token is stored; the token itself is shown once, when it is created.
-- depends: 0005_state_machine

CREATE TABLE tokens (
    id           bigserial PRIMARY KEY,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    role         text NOT NULL CHECK (role IN ('admin', 'operator', 'submitter', 'worker', 'viewer')),
    projects     bigint[],
    hash         bytea NOT NULL UNIQUE CHECK (length(hash) = 32),
    created_by   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz
);
-- A name names one live token (the job history records it).
CREATE UNIQUE INDEX tokens_live_name ON tokens (name) WHERE revoked_at IS NULL;

-- The token that registered a worker: a worker token acts only on its own workers.
ALTER TABLE workers ADD COLUMN token_id bigint REFERENCES tokens (id) ON DELETE SET NULL;
