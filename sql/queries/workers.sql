-- name: worker_register
INSERT INTO workers (project_id, name, entity, host, pid, cpu, accelerators, tags)
VALUES (CASE WHEN $1::text IS NULL THEN NULL ELSE wn_project_id($1) END, $2, $3, $4, $5, $6, $7, $8)
RETURNING id, project_id, name, entity, host, pid, cpu, accelerators, tags, status, registered_at, last_seen;

-- name: worker_heartbeat
SELECT wn_heartbeat($1, $2, $3, $4);

-- name: worker_deregister
SELECT wn_deregister($1);

-- name: worker_list
SELECT w.id, w.project_id, w.name, w.entity, w.host, w.pid, w.cpu, w.accelerators, w.tags, w.status,
       w.registered_at, w.last_seen,
       coalesce(array_agg(j.id ORDER BY j.id) FILTER (WHERE j.id IS NOT NULL), '{}') AS running,
       coalesce(sum(j.required_cpu), 0)::int AS used_cpu,
       coalesce(sum(j.required_accelerators), 0)::int AS used_accelerators
  FROM workers w LEFT JOIN jobs j ON j.worker_id = w.id AND j.status = 'RUNNING'
 WHERE ($1::text IS NULL OR w.project_id = wn_project_id($1))
   AND ($2::text IS NULL OR w.status = $2)
 GROUP BY w.id ORDER BY w.id;

-- name: reap
SELECT wn_reap($1);
