-- Dashboard sessions live in the database, so that signing out ends a session on every server and
-- a revoked token's sessions stop at once: the browser's cookie holds a random session id, this
-- table its SHA-256. A session belongs to a stored token (token_id) or to the bootstrap admin
-- token, which is not in the database (admin_hash: its SHA-256, so a changed admin token ends
-- them). Cookies signed by earlier releases name no row here: they stop working.
-- ui_secret holds one random key shared by every server on the database: each form's CSRF value
-- is an HMAC under it of the browser's session (or of its pre-login cookie).
-- depends: 0007_lean_jobs

CREATE TABLE ui_sessions (
    hash         bytea PRIMARY KEY CHECK (length(hash) = 32),
    token_id     bigint REFERENCES tokens (id) ON DELETE CASCADE,
    admin_hash   bytea CHECK (length(admin_hash) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((token_id IS NULL) <> (admin_hash IS NULL))
);
CREATE INDEX ui_sessions_token ON ui_sessions (token_id);
CREATE INDEX ui_sessions_expires ON ui_sessions (expires_at);

CREATE TABLE ui_secret (
    id     int PRIMARY KEY CHECK (id = 1),
    secret bytea NOT NULL CHECK (length(secret) >= 32)
);
