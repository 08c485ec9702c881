-- Gauges read from the database for /metrics, computed on an interval by one server at a time.

-- name: metrics_lead
-- Become the server that computes the database gauges: a session lock, held until this
-- connection closes (true when this session holds it).
SELECT pg_try_advisory_lock(hashtext('whatsnext.metrics'));

-- name: metrics_projects
-- Active projects: their gauges are exported (as 0) even when they have no jobs.
SELECT name FROM projects WHERE status = 'ACTIVE' ORDER BY name;

-- name: metrics_job_counts
-- Jobs by project and status (wn_job_counts: kept as jobs change, no count over the table).
SELECT p.name AS project, c.status, c.n AS jobs
  FROM wn_job_counts() c JOIN projects p ON p.id = c.project_id;

-- name: metrics_oldest_eligible
-- Per project, how long its oldest eligible job (pending, dependencies met, retry delay over) has
-- been waiting, in seconds.
SELECT p.name AS project, extract(epoch FROM now() - min(j.eligible_at))::float8 AS age
  FROM jobs j JOIN projects p ON p.id = j.project_id
 WHERE j.status = 'PENDING' AND j.unmet_deps = 0 AND j.eligible_at <= now()
 GROUP BY p.name;

-- name: metrics_workers
-- Workers by state, their status as wn_worker_status says in lower case (online, lost, offline),
-- with the CPUs and GPUs they declared.
SELECT lower(wn_worker_status(w.status, w.last_seen, w.lease_seconds)) AS state,
       count(*)::bigint AS workers,
       coalesce(sum(w.cpu), 0)::bigint AS cpus,
       coalesce(sum(w.accelerators), 0)::bigint AS gpus
  FROM workers w
 GROUP BY 1;

-- name: metrics_allocated
-- CPUs and GPUs held by running jobs, per project.
SELECT p.name AS project, sum(j.required_cpu)::bigint AS cpus,
       sum(j.required_accelerators)::bigint AS gpus
  FROM jobs j JOIN projects p ON p.id = j.project_id
 WHERE j.status = 'RUNNING'
 GROUP BY p.name;

-- name: metrics_project_name
-- A project's name from its id (labels name projects, whichever key a request used).
SELECT name FROM projects WHERE id = :project_id;

-- name: metrics_project_names
-- The names of projects from their ids (what a token of some projects may see of /metrics).
SELECT name FROM projects WHERE id = ANY (:project_ids::bigint[]);

-- name: metrics_pool
-- Each project's standing in the shared pool (wn_project_usage): its share, its quotas (NULL:
-- none) and its usage decayed with the pool's half-life (weighted, GPU- and CPU-seconds), for
-- active projects and any other with a running job.
SELECT p.name AS project, u.share, p.max_gpus, p.max_cpus, p.max_running,
       u.usage, u.gpu_seconds, u.cpu_seconds
  FROM wn_project_usage() u JOIN projects p ON p.id = u.project_id
 WHERE p.status = 'ACTIVE' OR u.running_jobs > 0;

-- name: metrics_allocations
-- Allocations by queue and state (a queue without any has one row with a NULL state).
SELECT q.name AS queue, a.state, count(a.id)::bigint AS allocations
  FROM alloc_queues q LEFT JOIN allocations a ON a.queue_id = q.id
 GROUP BY q.name, a.state;
