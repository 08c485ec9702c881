-- name: ui_session_create
-- A new dashboard session of a stored token (:token_id) or of the bootstrap admin token
-- (:admin_hash); expired sessions and those of revoked or expired tokens go at the same time.
WITH gone AS (
    DELETE FROM ui_sessions s
     WHERE s.expires_at <= now()
        OR s.token_id IN (SELECT id FROM tokens
                           WHERE revoked_at IS NOT NULL OR (expires_at IS NOT NULL AND expires_at <= now()))
)
INSERT INTO ui_sessions (hash, token_id, admin_hash, expires_at)
VALUES (:hash, :token_id, :admin_hash, now() + make_interval(secs => :seconds::float8))
RETURNING expires_at;

-- name: ui_session_lookup
-- The unexpired session with this hash and its token (revoked and expired say whether it may
-- still act); notes the session's and the token's use at most once a minute.
WITH s AS (
    SELECT hash, token_id, admin_hash, last_seen_at
      FROM ui_sessions WHERE hash = :hash AND expires_at > now()
), t AS (
    SELECT tk.id, tk.name, tk.role, tk.projects, tk.revoked_at IS NOT NULL AS revoked,
           tk.expires_at IS NOT NULL AND tk.expires_at <= now() AS expired, tk.last_used_at
      FROM tokens tk JOIN s ON tk.id = s.token_id
), seen AS (
    UPDATE ui_sessions SET last_seen_at = now()
      FROM s
     WHERE ui_sessions.hash = s.hash AND s.last_seen_at < now() - interval '1 minute'
    RETURNING ui_sessions.hash
), used AS (
    UPDATE tokens SET last_used_at = now()
      FROM t
     WHERE tokens.id = t.id AND NOT t.revoked AND NOT t.expired
       AND (t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute')
    RETURNING tokens.id
)
SELECT s.token_id, s.admin_hash, t.name, t.role, t.projects,
       coalesce(t.revoked, false) AS revoked, coalesce(t.expired, false) AS expired
  FROM s LEFT JOIN t ON t.id = s.token_id;

-- name: ui_session_delete
-- End a session (signing out); false when there was none.
DELETE FROM ui_sessions WHERE hash = :hash RETURNING true;

-- name: ui_secret
-- The dashboard's key: the one stored, or :candidate when there was none yet.
WITH made AS (
    INSERT INTO ui_secret (id, secret) VALUES (1, :candidate) ON CONFLICT (id) DO NOTHING
    RETURNING secret
)
SELECT secret FROM made UNION ALL SELECT secret FROM ui_secret WHERE id = 1 LIMIT 1;
