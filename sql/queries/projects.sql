-- name: project_create
INSERT INTO projects (name, description, strict_tasks, strict_parameters)
VALUES (:name, :description, :strict_tasks, :strict_parameters)
RETURNING id, name, description, status, strict_tasks, strict_parameters, share, max_gpus, max_cpus,
          max_running, created_at, updated_at;

-- name: project_get
-- A project with its share, its quotas and its job counts by status (the kept counters:
-- wn_job_counts, not a count over every job the project ever had).
SELECT p.id, p.name, p.description, p.status, p.strict_tasks, p.strict_parameters,
       p.share, p.max_gpus, p.max_cpus, p.max_running, p.created_at, p.updated_at,
       (SELECT coalesce(jsonb_object_agg(c.status, c.n), '{}') FROM wn_job_counts(p.id) c) AS jobs
  FROM projects p WHERE p.id = wn_project_id(:project);

-- name: project_list
-- Projects with their share and quotas, of one status (NULL: any) among :projects (NULL: all).
SELECT id, name, description, status, strict_tasks, strict_parameters, share, max_gpus, max_cpus,
       max_running, created_at, updated_at
  FROM projects
 WHERE (:status::text IS NULL OR status = :status)
   AND (:projects::bigint[] IS NULL OR id = ANY(:projects))
 ORDER BY id;

-- name: project_update
-- Change what is given: a field left NULL stays as it is, but a quota named in :quotas takes its
-- value, NULL included (NULL removes the quota).
UPDATE projects
   SET name = coalesce(:name, name), description = coalesce(:description, description),
       status = coalesce(:status, status), strict_tasks = coalesce(:strict_tasks, strict_tasks),
       strict_parameters = coalesce(:strict_parameters, strict_parameters),
       share = coalesce(:share, share),
       max_gpus = CASE WHEN 'max_gpus' = ANY (:quotas::text[]) THEN :max_gpus::integer ELSE max_gpus END,
       max_cpus = CASE WHEN 'max_cpus' = ANY (:quotas::text[]) THEN :max_cpus::integer ELSE max_cpus END,
       max_running = CASE WHEN 'max_running' = ANY (:quotas::text[]) THEN :max_running::integer
                          ELSE max_running END,
       updated_at = now()
 WHERE id = wn_project_id(:project)
RETURNING id, name, description, status, strict_tasks, strict_parameters, share, max_gpus, max_cpus,
          max_running, created_at, updated_at;

-- name: project_delete
DELETE FROM projects WHERE id = wn_project_id(:project) RETURNING id;

-- name: project_resolve
-- The project's id, and in how many seconds the next delayed (retrying) job becomes eligible
-- (on the database's clock; wn_next_due).
SELECT p.id, extract(epoch FROM wn_next_due(p.id) - now())::float8 AS next_available_in
  FROM projects p WHERE p.id = wn_project_id(:project);

-- name: project_idle
-- What a worker that found nothing to claim needs to decide whether to wait or to stop:
-- its total CPUs, GPUs and tags. `runnable` is whether some pending job with its
-- dependencies met could ever fit it (it may be locked by a concurrent claim, or still delayed),
-- among the tasks it takes (:tasks, NULL: any; :with_command: only tasks with a command) and
-- whose timeout fits in its :time_left (NULL: no end; a job without a timeout fits any worker).
-- `unfit` is the first pending job with its dependencies met that it cannot take, and why.
WITH mine AS (
    SELECT t.id FROM tasks t
     WHERE t.project_id = :project_id AND (:tasks::text[] IS NULL OR t.name = ANY (:tasks::text[]))
       AND (NOT :with_command OR t.command IS NOT NULL)
)
SELECT count(*) FILTER (WHERE status = 'PENDING') AS pending,
       count(*) FILTER (WHERE status = 'RUNNING') AS running,
       count(*) FILTER (WHERE status = 'PENDING' AND unmet_deps = 0 AND available_at > now()) AS delayed,
       EXISTS (SELECT 1 FROM jobs r
                WHERE r.project_id = :project_id AND r.status = 'PENDING' AND r.unmet_deps = 0
                  AND r.required_cpu <= :total_cpu AND r.required_accelerators <= :total_accelerators
                  AND r.required_tags <@ :tags AND r.task_id IN (SELECT id FROM mine)
                  AND (:time_left::float8 IS NULL OR r.timeout IS NULL OR r.timeout <= :time_left::float8))
         AS runnable,
       (SELECT jsonb_build_object('id', r.id, 'task', t.name, 'cpu', r.required_cpu,
                                  'gpus', r.required_accelerators, 'tags', r.required_tags,
                                  'task_taken', r.task_id IN (SELECT id FROM mine),
                                  'has_command', t.command IS NOT NULL, 'timeout', r.timeout)
          FROM jobs r JOIN tasks t ON t.id = r.task_id
         WHERE r.project_id = :project_id AND r.status = 'PENDING' AND r.unmet_deps = 0
           AND NOT (r.required_cpu <= :total_cpu AND r.required_accelerators <= :total_accelerators
                    AND r.required_tags <@ :tags AND r.task_id IN (SELECT id FROM mine)
                    AND (:time_left::float8 IS NULL OR r.timeout IS NULL
                         OR r.timeout <= :time_left::float8))
         ORDER BY r.priority DESC, r.id LIMIT 1) AS unfit
  FROM jobs WHERE project_id = :project_id AND status IN ('PENDING', 'RUNNING');
