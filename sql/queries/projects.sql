-- name: project_create
INSERT INTO projects (name, description) VALUES ($1, $2)
RETURNING id, name, description, status, created_at, updated_at;

-- name: project_get
-- A project with its job counts by status.
SELECT p.id, p.name, p.description, p.status, p.created_at, p.updated_at,
       (SELECT coalesce(jsonb_object_agg(c.status, c.n), '{}')
          FROM (SELECT j.status, count(*) AS n FROM jobs j WHERE j.project_id = p.id GROUP BY j.status) c)
         AS jobs
  FROM projects p WHERE p.id = wn_project_id($1);

-- name: project_list
SELECT id, name, description, status, created_at, updated_at
  FROM projects WHERE ($1::text IS NULL OR status = $1) ORDER BY id;

-- name: project_update
UPDATE projects
   SET name = coalesce($2, name), description = coalesce($3, description),
       status = coalesce($4, status), updated_at = now()
 WHERE id = wn_project_id($1)
RETURNING id, name, description, status, created_at, updated_at;

-- name: project_delete
DELETE FROM projects WHERE id = wn_project_id($1) RETURNING id;

-- name: project_resolve
-- The project's id, and in how many seconds the next delayed (retrying) job becomes eligible
-- (on the database's clock).
SELECT p.id,
       (SELECT extract(epoch FROM min(j.available_at) - now())::float8 FROM jobs j
         WHERE j.project_id = p.id AND j.status = 'PENDING' AND j.unmet_deps = 0
           AND j.available_at > now()) AS next_available_in
  FROM projects p WHERE p.id = wn_project_id($1);

-- name: project_idle
-- What a worker that found nothing to claim needs to decide whether to wait or to stop:
-- $2..$4 are its total CPUs, GPUs and tags. `runnable` is whether some pending job with its
-- dependencies met could ever fit it (it may be locked by a concurrent claim, or still delayed).
SELECT count(*) FILTER (WHERE status = 'PENDING') AS pending,
       count(*) FILTER (WHERE status = 'RUNNING') AS running,
       count(*) FILTER (WHERE status = 'PENDING' AND unmet_deps = 0 AND available_at > now()) AS delayed,
       EXISTS (SELECT 1 FROM jobs r
                WHERE r.project_id = $1 AND r.status = 'PENDING' AND r.unmet_deps = 0
                  AND r.required_cpu <= $2 AND r.required_accelerators <= $3 AND r.required_tags <@ $4)
         AS runnable
  FROM jobs WHERE project_id = $1 AND status IN ('PENDING', 'RUNNING');
