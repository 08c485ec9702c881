-- Reads of the web dashboard. Counts are aggregated here, tables are paged (keyset on id), so a
-- page costs the same with a thousand jobs or a hundred thousand.

-- name: dash_projects
-- Every project (or those in :projects) with its job counts by status (wn_job_counts).
SELECT p.id, p.name, p.description, p.status AS project_status,
       coalesce((SELECT jsonb_object_agg(c.status, c.n) FROM wn_job_counts(p.id) c), '{}') AS counts
  FROM projects p
 WHERE (:projects::bigint[] IS NULL OR p.id = ANY (:projects))
 ORDER BY p.name;

-- name: dash_completed_recently
-- The jobs each project (of :projects, or all) completed lately, read from the :sample jobs that
-- finished last within the hour at most (backwards through jobs_finished), so that the overview
-- costs the same at any throughput (counting the whole hour read every job it finished: a
-- million an hour at 300 jobs/s). The counts are exact for the window they cover, which seconds
-- gives: the whole last hour while fewer than :sample jobs finished in it, else the time since
-- the oldest job of the sample finished (every job that finished after it is in the sample).
WITH recent AS (
    SELECT j.project_id, j.status, j.finished_at
      FROM jobs j
     WHERE j.status IN ('COMPLETED', 'FAILED', 'CANCELLED')
       AND j.finished_at > now() - interval '1 hour'
     ORDER BY j.finished_at DESC
     LIMIT :sample),
span AS (
    SELECT CASE WHEN count(*) >= :sample THEN min(finished_at) END AS since FROM recent)
-- One row per project that completed any, or one with project_id NULL when none did.
SELECT c.project_id, coalesce(c.completed, 0)::bigint AS completed,
       extract(epoch FROM now() - coalesce(s.since, now() - interval '1 hour'))::float8 AS seconds
  FROM span s
  LEFT JOIN LATERAL (
      SELECT r.project_id, count(*) AS completed
        FROM recent r
       WHERE r.status = 'COMPLETED'
         AND (s.since IS NULL OR r.finished_at > s.since)
         AND (:projects::bigint[] IS NULL OR r.project_id = ANY (:projects))
       GROUP BY r.project_id) c ON true;

-- name: dash_cluster
-- How many workers are ONLINE and how many LOST (wn_worker_status), and the CPUs and GPUs the
-- ONLINE ones declared and hold.
SELECT count(*) FILTER (WHERE w.state = 'ONLINE')::bigint AS workers_online,
       count(*) FILTER (WHERE w.state = 'LOST')::bigint AS workers_lost,
       coalesce(sum(w.cpu) FILTER (WHERE w.state = 'ONLINE'), 0)::bigint AS cpu_total,
       coalesce(sum(w.accelerators) FILTER (WHERE w.state = 'ONLINE'), 0)::bigint AS gpu_total,
       coalesce(sum(u.cpu), 0)::bigint AS cpu_used,
       coalesce(sum(u.gpu), 0)::bigint AS gpu_used
  FROM (SELECT w.id, w.cpu, w.accelerators, wn_worker_status(w.status, w.last_seen, w.lease_seconds) AS state
          FROM workers w
         WHERE w.status <> 'OFFLINE'
           AND (:projects::bigint[] IS NULL OR w.project_id IS NULL OR w.project_id = ANY (:projects))) w
  LEFT JOIN LATERAL (SELECT sum(j.required_cpu) AS cpu, sum(j.required_accelerators) AS gpu
                       FROM jobs j WHERE j.worker_id = w.id AND j.status = 'RUNNING') u ON w.state = 'ONLINE';

-- name: dash_project
-- One project by name or id, with its job counts by status (wn_job_counts).
SELECT p.id, p.name, p.description, p.status AS project_status,
       coalesce((SELECT jsonb_object_agg(c.status, c.n) FROM wn_job_counts(p.id) c), '{}') AS counts
  FROM projects p
 WHERE p.id = wn_project_id(:project);

-- name: dash_kanban
-- The newest :per_status jobs of each status of a project (the board's columns). One branch per
-- status, each naming its status as a constant: the planner then knows a rare status is rare and
-- reads it from jobs_project_status; with the status as a parameter it walked the primary key
-- backwards through every job of the project looking for one (seconds with millions finished).
(SELECT j.status, j.id, j.name, t.name AS task, j.attempt, j.worker_name, j.unmet_deps
   FROM jobs j JOIN tasks t ON t.id = j.task_id
  WHERE j.project_id = :project_id AND j.status = 'PENDING' ORDER BY j.id DESC LIMIT :per_status)
UNION ALL
(SELECT j.status, j.id, j.name, t.name AS task, j.attempt, j.worker_name, j.unmet_deps
   FROM jobs j JOIN tasks t ON t.id = j.task_id
  WHERE j.project_id = :project_id AND j.status = 'RUNNING' ORDER BY j.id DESC LIMIT :per_status)
UNION ALL
(SELECT j.status, j.id, j.name, t.name AS task, j.attempt, j.worker_name, j.unmet_deps
   FROM jobs j JOIN tasks t ON t.id = j.task_id
  WHERE j.project_id = :project_id AND j.status = 'COMPLETED' ORDER BY j.id DESC LIMIT :per_status)
UNION ALL
(SELECT j.status, j.id, j.name, t.name AS task, j.attempt, j.worker_name, j.unmet_deps
   FROM jobs j JOIN tasks t ON t.id = j.task_id
  WHERE j.project_id = :project_id AND j.status = 'FAILED' ORDER BY j.id DESC LIMIT :per_status)
UNION ALL
(SELECT j.status, j.id, j.name, t.name AS task, j.attempt, j.worker_name, j.unmet_deps
   FROM jobs j JOIN tasks t ON t.id = j.task_id
  WHERE j.project_id = :project_id AND j.status = 'CANCELLED' ORDER BY j.id DESC LIMIT :per_status)
UNION ALL
(SELECT j.status, j.id, j.name, t.name AS task, j.attempt, j.worker_name, j.unmet_deps
   FROM jobs j JOIN tasks t ON t.id = j.task_id
  WHERE j.project_id = :project_id AND j.status = 'BLOCKED' ORDER BY j.id DESC LIMIT :per_status);

-- name: dash_jobs
-- One page of a project's jobs matching the job filter (wn_job_filter), newest first (:before:
-- ids below it).
SELECT j.id, j.name, j.task, j."group", j.status, j.parameters, j.result,
       j.attempt, j.worker_name, j.duration, j.created_at, j.started_at, j.finished_at,
       j.unmet_deps, j.exit_code
  FROM wn_job_filter(:project_id, :statuses::text[], :task::text, :group::text,
                     :name_like::text, :name_contains::text, :where_params::jsonb, :worker::text) j
 WHERE (:before::bigint IS NULL OR j.id < :before)
 ORDER BY j.id DESC
 LIMIT :limit;

-- name: dash_job_ids
-- The ids of a project's jobs matching the job filter and in one of :acting_on (a bulk action
-- touches only the statuses it applies to), among :ids when given.
SELECT j.id
  FROM wn_job_filter(:project_id, :statuses::text[], :task::text, :group::text,
                     :name_like::text, :name_contains::text, :where_params::jsonb, :worker::text) j
 WHERE j.status = ANY (:acting_on::text[])
   AND (:ids::bigint[] IS NULL OR j.id = ANY (:ids::bigint[]))
 ORDER BY j.id
 LIMIT :limit;

-- name: dash_project_names
-- What the filter's choices offer: a project's task and group names.
SELECT 'task' AS kind, t.name FROM tasks t WHERE t.project_id = :project_id
UNION ALL
SELECT 'group', g.name FROM job_groups g WHERE g.project_id = :project_id
ORDER BY 1, 2;

-- name: dash_attempts
-- A job's attempts from its history: who ran each, when it started and how it ended.
SELECT e.attempt,
       max(e.worker_id) FILTER (WHERE e.status = 'RUNNING') AS worker_id,
       (SELECT w.name FROM workers w WHERE w.id = max(e.worker_id) FILTER (WHERE e.status = 'RUNNING'))
         AS worker_name,
       min(e.at) FILTER (WHERE e.status = 'RUNNING') AS started_at,
       (array_agg(e.status ORDER BY e.id DESC))[1] AS status,
       (array_agg(e.reason ORDER BY e.id DESC))[1] AS reason,
       max(e.at) AS last_at
  FROM job_events e
 WHERE e.job_id = :job_id AND e.attempt > 0
 GROUP BY e.attempt
 ORDER BY e.attempt;

-- name: dash_why_workers
-- The workers that could take jobs of a project (registered for it, for several projects among
-- them it, or for any project), with what they hold now, their status (wn_worker_status) and
-- whether it is ONLINE, and the seconds left until their time ends (time_left; NULL: no end).
SELECT w.id, w.name, w.cpu, w.accelerators, w.tags, w.last_seen,
       wn_worker_status(w.status, w.last_seen, w.lease_seconds) AS status,
       wn_worker_status(w.status, w.last_seen, w.lease_seconds) = 'ONLINE' AS online,
       extract(epoch FROM w.deadline - now())::float8 AS time_left,
       coalesce(sum(j.required_cpu), 0)::int AS used_cpu,
       coalesce(sum(j.required_accelerators), 0)::int AS used_accelerators
  FROM workers w LEFT JOIN jobs j ON j.worker_id = w.id AND j.status = 'RUNNING'
 WHERE (w.project_id IS NULL AND w.project_ids IS NULL) OR w.project_id = :project_id
    OR :project_id = ANY (w.project_ids)
 GROUP BY w.id
 ORDER BY w.id;

-- name: dash_why_pool
-- What sharing the pool holds a pending job (:job_id) to, in one row: its concurrency key with
-- the key's running jobs in the project (key_running) and the smallest limit among them and the
-- job (key_limit); its project's quotas against what the project's running jobs hold; its
-- project's usage and share; and `ahead`, the projects a claim serves before it (a JSON array,
-- lowest usage against share first): those sharing with it an ONLINE worker (wn_worker_status)
-- that serves several projects and could run the job, with an eligible job such
-- a worker could take, and a lower standing as wn_claim_pool compares them (usage / share, then
-- what they hold now / share, then the older project).
WITH me AS (
    SELECT j.project_id, j.concurrency_key, j.concurrency_limit, j.required_cpu,
           j.required_accelerators, j.required_tags
      FROM jobs j WHERE j.id = :job_id
), pool AS (
    SELECT w.cpu, w.accelerators, w.tags, w.project_ids
      FROM workers w, me
     WHERE wn_worker_status(w.status, w.last_seen, w.lease_seconds) = 'ONLINE'
       AND (w.project_ids IS NOT NULL OR w.all_projects)
       AND (w.project_ids IS NULL OR me.project_id = ANY (w.project_ids))
       AND w.cpu >= me.required_cpu AND w.accelerators >= me.required_accelerators
       AND me.required_tags <@ w.tags
), rivals AS (
    SELECT q.id
      FROM projects q, me
     WHERE q.id <> me.project_id
       AND EXISTS (SELECT 1 FROM pool w JOIN jobs o ON o.project_id = q.id
                    WHERE (w.project_ids IS NULL OR q.id = ANY (w.project_ids))
                      AND o.status = 'PENDING' AND o.unmet_deps = 0 AND o.available_at <= now()
                      AND o.required_cpu <= w.cpu AND o.required_accelerators <= w.accelerators
                      AND o.required_tags <@ w.tags)
), u AS (
    SELECT u.project_id, p.name, u.share, u.usage, u.running_jobs, u.running_cpus, u.running_gpus,
           u.usage / u.share AS standing, u.running_weight / u.share AS holding,
           p.max_gpus, p.max_cpus, p.max_running
      FROM wn_project_usage(ARRAY(SELECT project_id FROM me UNION ALL SELECT id FROM rivals)) u
      JOIN projects p ON p.id = u.project_id
)
SELECT mine.name AS project, mine.share, mine.usage, mine.running_jobs, mine.running_cpus,
       mine.running_gpus, mine.max_gpus, mine.max_cpus, mine.max_running, me.concurrency_key,
       k.running AS key_running, least(me.concurrency_limit, k.lim) AS key_limit,
       coalesce((SELECT jsonb_agg(jsonb_build_object('id', o.project_id, 'name', o.name,
                                                     'share', o.share, 'usage', o.usage)
                                  ORDER BY o.standing, o.holding, o.project_id)
                   FROM u o
                  WHERE o.project_id <> mine.project_id
                    AND (o.standing, o.holding, o.project_id)
                        < (mine.standing, mine.holding, mine.project_id)), '[]') AS ahead
  FROM me JOIN u mine ON mine.project_id = me.project_id
  LEFT JOIN LATERAL (SELECT count(*)::integer AS running, min(r.concurrency_limit) AS lim
                       FROM jobs r
                      WHERE r.project_id = me.project_id AND r.status = 'RUNNING'
                        AND r.concurrency_key = me.concurrency_key) k ON true;

-- name: dash_pool
-- The pool page: each project of :projects (NULL: every project) that is active or runs a job,
-- with its share, quotas, what its running jobs hold now and its usage decayed with the pool's
-- half-life (weighted, GPU- and CPU-seconds); then one row (id and name NULL) summing the
-- projects outside :projects that used the pool, so a viewer learns no other project's name.
-- Each row carries the pool's totals (usage, running GPUs) and half-life.
WITH u AS (
    SELECT u.*, p.name, p.status, p.max_gpus, p.max_cpus, p.max_running,
           (:projects::bigint[] IS NULL OR p.id = ANY (:projects::bigint[])) AS shown
      FROM wn_project_usage() u JOIN projects p ON p.id = u.project_id
), total AS (
    SELECT coalesce(sum(u.usage), 0) AS usage, coalesce(sum(u.running_gpus), 0)::bigint AS gpus,
           coalesce(sum(u.running_cpus), 0)::bigint AS cpus,
           (SELECT half_life FROM pool_settings WHERE id = 1) AS half_life
      FROM u
), listed AS (
    SELECT u.project_id AS id, u.name, u.share, u.max_gpus, u.max_cpus, u.max_running,
           u.running_jobs::bigint AS running_jobs, u.running_gpus::bigint AS running_gpus,
           u.running_cpus::bigint AS running_cpus, u.usage, u.gpu_seconds, u.cpu_seconds
      FROM u
     WHERE u.shown AND (u.status = 'ACTIVE' OR u.running_jobs > 0)
    UNION ALL
    SELECT NULL, NULL, NULL, NULL, NULL, NULL, sum(u.running_jobs), sum(u.running_gpus),
           sum(u.running_cpus), sum(u.usage), sum(u.gpu_seconds), sum(u.cpu_seconds)
      FROM u
     WHERE NOT u.shown
    HAVING sum(u.usage) > 0 OR sum(u.running_jobs) > 0
)
SELECT r.*, t.usage AS total_usage, t.gpus AS total_running_gpus, t.cpus AS total_running_cpus,
       t.half_life
  FROM listed r, total t
 ORDER BY r.name IS NULL, r.name;

-- name: dash_queue_ahead
-- How many eligible jobs of the job's project come before it in hand-out order.
SELECT count(*)::bigint
  FROM jobs j, jobs me
 WHERE me.id = :job_id AND j.project_id = me.project_id AND j.status = 'PENDING'
   AND j.unmet_deps = 0 AND j.available_at <= now() AND j.id <> me.id
   AND (j.priority > me.priority OR (j.priority = me.priority AND j.id < me.id));

-- name: dash_workers
-- Every worker (or those of :projects) with its status (wn_worker_status), online ones first, with
-- the jobs it holds and their GPUs.
SELECT w.id, w.name, w.entity, w.host, w.pid, w.cpu, w.accelerators, w.tags,
       wn_worker_status(w.status, w.last_seen, w.lease_seconds) AS status,
       w.registered_at, w.last_seen, p.name AS project,
       wn_worker_status(w.status, w.last_seen, w.lease_seconds) = 'ONLINE' AS online,
       coalesce(sum(j.required_cpu), 0)::int AS used_cpu,
       coalesce(sum(j.required_accelerators), 0)::int AS used_accelerators,
       coalesce(jsonb_agg(jsonb_build_object('id', j.id, 'name', j.name, 'gpus', j.gpus) ORDER BY j.id)
                FILTER (WHERE j.id IS NOT NULL), '[]') AS jobs
  FROM workers w LEFT JOIN projects p ON p.id = w.project_id
  LEFT JOIN jobs j ON j.worker_id = w.id AND j.status = 'RUNNING'
 WHERE (:projects::bigint[] IS NULL OR w.project_id IS NULL OR w.project_id = ANY (:projects))
 GROUP BY w.id, p.name
 ORDER BY 13 DESC, w.id;

-- name: dash_graph_nodes
-- The jobs of a project (or of one group) for the dependency graph, oldest first.
SELECT j.id, j.name, j.status
  FROM jobs j LEFT JOIN job_groups g ON g.id = j.group_id
 WHERE j.project_id = :project_id AND (:group::text IS NULL OR g.name = :group)
 ORDER BY j.id
 LIMIT :limit;

-- name: dash_graph_edges
-- The dependencies between the given jobs.
SELECT jd.depends_on AS source, jd.job_id AS target
  FROM job_dependencies jd
 WHERE jd.job_id = ANY (:ids::bigint[]) AND jd.depends_on = ANY (:ids::bigint[]);

-- name: dash_events_head
-- Where live updates start: after the newest history entry and the newest job.
SELECT coalesce((SELECT max(id) FROM job_events), 0)::bigint AS event,
       coalesce((SELECT max(id) FROM jobs), 0)::bigint AS job;

-- name: dash_events_since
-- What changed since: history entries after :after and jobs queued after :after_job (a job's
-- creation is on its row), each oldest first (a stream picks those of its project or job).
SELECT c.kind, c.id, c.job_id, c.project_id
  FROM (SELECT 'event' AS kind, e.id, e.job_id, e.project_id FROM job_events e
         WHERE e.id > :after ORDER BY e.id LIMIT :limit) c
UNION ALL
SELECT n.kind, n.id, n.job_id, n.project_id
  FROM (SELECT 'job' AS kind, j.id, j.id AS job_id, j.project_id FROM jobs j
         WHERE j.id > :after_job ORDER BY j.id LIMIT :limit) n;

-- name: dash_log_tail
-- The last :limit lines of a job's log (all attempts), oldest first.
SELECT l.id, l.attempt, l.line, l.at
  FROM (SELECT o.id, o.attempt, o.line, o.at FROM job_logs o WHERE o.job_id = :job_id
         ORDER BY o.id DESC LIMIT :limit) l
 ORDER BY l.id;

-- name: dash_artifacts
-- A job's artifacts, inputs first.
SELECT a.id, a.direction, a.uri, a.size, a.sha256, a.modified_at, a.missing, a.refused, a.reason,
       a.kind, a.attempt
  FROM artifacts a WHERE a.job_id = :job_id
 ORDER BY a.direction, a.id;

-- name: dash_why_alloc
-- The allocations requested for a pending job (:job_id): QUEUED or RUNNING ones of a queue that
-- serves its project, whose shape the job fits (the CPUs, GPUs and tags it names, where it names
-- them) and whose time limit its timeout fits; running ones first, then the oldest.
SELECT q.name AS queue, a.id, a.name, a.external_id, a.state, a.reason
  FROM jobs j
  JOIN alloc_queues q ON j.project_id = ANY (q.project_ids)
  JOIN allocations a ON a.queue_id = q.id AND a.state IN ('QUEUED', 'RUNNING')
 WHERE j.id = :job_id
   AND CASE WHEN jsonb_typeof(a.shape -> 'cpu') = 'number'
            THEN j.required_cpu <= (a.shape ->> 'cpu')::numeric ELSE true END
   AND CASE WHEN jsonb_typeof(a.shape -> 'gpus') = 'number'
            THEN j.required_accelerators <= (a.shape ->> 'gpus')::numeric ELSE true END
   AND CASE WHEN jsonb_typeof(a.shape -> 'tags') = 'array'
            THEN j.required_tags <@ ARRAY(SELECT jsonb_array_elements_text(a.shape -> 'tags'))
            ELSE true END
   AND (j.timeout IS NULL OR j.timeout <= a.time_limit)
 ORDER BY a.state = 'RUNNING' DESC, a.id
 LIMIT 10;
