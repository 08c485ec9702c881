-- name: token_create
-- A new token (its hash only); :projects NULL covers every project.
INSERT INTO tokens (name, role, projects, hash, created_by, expires_at)
VALUES (:name, :role, :projects, :hash, :created_by,
        CASE WHEN :expires_in::float8 IS NULL THEN NULL
             ELSE now() + make_interval(secs => :expires_in) END)
RETURNING id, name, role, projects, created_by, created_at, expires_at, last_used_at, revoked_at;

-- name: token_list
SELECT id, name, role, projects, created_by, created_at, expires_at, last_used_at, revoked_at
  FROM tokens ORDER BY id;

-- name: token_revoke
-- Revoke a token (revoking it again keeps the first time); NULL when there is no such token.
UPDATE tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = :token_id
RETURNING id, name, role, projects, created_by, created_at, expires_at, last_used_at, revoked_at;

-- name: token_authenticate
-- The token with this hash, whether it is revoked or expired; notes its use at most once a minute.
WITH t AS (
    SELECT id, name, role, projects, revoked_at IS NOT NULL AS revoked,
           expires_at IS NOT NULL AND expires_at <= now() AS expired, last_used_at
      FROM tokens WHERE hash = :hash
), touched AS (
    UPDATE tokens SET last_used_at = now()
      FROM t
     WHERE tokens.id = t.id AND NOT t.revoked AND NOT t.expired
       AND (t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute')
    RETURNING tokens.id
)
SELECT id, name, role, projects, revoked, expired FROM t;

-- name: token_project_ids
-- Each key (a project's id or name) with the id it names, NULL when no project has it.
SELECT k.key, p.id
  FROM unnest(:keys::text[]) WITH ORDINALITY AS k(key, ord)
  LEFT JOIN projects p
    ON CASE WHEN k.key ~ '^[0-9]{1,18}$' THEN p.id = k.key::bigint ELSE p.name = k.key END
 ORDER BY k.ord;

-- name: auth_project_id
-- The id of the project named by :project (id or name); NULL when unknown.
SELECT id FROM projects
 WHERE CASE WHEN :project::text ~ '^[0-9]{1,18}$' THEN id = (:project::text)::bigint
            ELSE name = :project::text END;

-- name: auth_job_project
-- The project a job belongs to (NULL: no such job).
SELECT project_id FROM jobs WHERE id = :job_id;

-- name: auth_worker
-- Which token registered a worker, and its project (no row: no such worker).
SELECT token_id, project_id FROM workers WHERE id = :worker_id;

-- name: auth_foreign_jobs
-- Of :job_ids, those that no worker registered by token :token_id holds right now.
SELECT k.id
  FROM unnest(:job_ids::bigint[]) AS k(id)
 WHERE NOT EXISTS (SELECT 1 FROM jobs j JOIN workers w ON w.id = j.worker_id
                    WHERE j.id = k.id AND w.token_id = :token_id);
