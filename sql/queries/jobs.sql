-- name: job_get
-- A job as GET /jobs/{id} shows it (wn_job: the one definition of that row).
SELECT * FROM wn_job(:job_id);

-- name: job_list
-- Jobs of a project matching the job filter (wn_job_filter), newest first, keyset-paginated on id
-- (:before: return ids below this one). Without :full, parameters and result are left out (null):
-- a page stays small whatever the jobs carry.
SELECT j.id, j.name, j.task, CASE WHEN :full THEN j.parameters END AS parameters, j.priority,
       j.status, j.unmet_deps, j.attempt, j.required_cpu, j.required_accelerators, j.worker_name,
       j.created_at, j.started_at, j.finished_at, j.exit_code, j.error, j."group",
       CASE WHEN :full THEN j.result END AS result, j.duration
  FROM wn_job_filter(wn_project_id(:project), :statuses::text[], :task::text, :group::text,
                     :name_like::text, :name_contains::text, :where_params::jsonb, :worker::text) j
 WHERE (:before::bigint IS NULL OR j.id < :before)
 ORDER BY j.id DESC
 LIMIT :limit;

-- name: job_filter_counts
-- How many of a project's jobs match the job filter (wn_job_filter), by status and in all: what
-- `jobs ls --watch` draws its progress from, and what a bulk action of the CLI or the dashboard
-- would touch.
SELECT coalesce(jsonb_object_agg(c.status, c.n), '{}') AS counts, coalesce(sum(c.n), 0)::bigint AS total
  FROM (SELECT j.status, count(*) AS n
          FROM wn_job_filter(wn_project_id(:project), :statuses::text[], :task::text, :group::text,
                             :name_like::text, :name_contains::text, :where_params::jsonb, :worker::text) j
         GROUP BY j.status) c;

-- name: queue_list
-- Pending jobs in hand-out order: eligible ones first (priority, then FIFO), then those still
-- waiting for dependencies or for a retry delay.
SELECT j.id, j.name, t.name AS task, j.parameters, j.priority, j.status, j.unmet_deps, j.attempt,
       j.required_cpu, j.required_accelerators, j.created_at, j.available_at,
       (j.unmet_deps = 0 AND j.available_at <= now()) AS eligible
  FROM jobs j JOIN tasks t ON t.id = j.task_id
 WHERE j.project_id = wn_project_id(:project) AND j.status = 'PENDING'
 ORDER BY (j.unmet_deps = 0 AND j.available_at <= now()) DESC, j.priority DESC, j.id
 LIMIT :limit OFFSET :offset;

-- name: job_delete
-- Remove a job that is not running and that no unfinished job depends on.
WITH target AS (
    SELECT j.id, j.status,
           EXISTS (SELECT 1 FROM job_dependencies jd JOIN jobs d ON d.id = jd.job_id
                    WHERE jd.depends_on = j.id
                      AND d.status IN ('PENDING', 'RUNNING', 'BLOCKED')) AS has_dependents
      FROM jobs j WHERE j.id = :job_id AND j.project_id = wn_project_id(:project)
      FOR UPDATE
), del AS (
    DELETE FROM jobs j USING target t
     WHERE j.id = t.id AND t.status <> 'RUNNING' AND NOT t.has_dependents
    RETURNING j.id
)
SELECT t.id, t.status, t.has_dependents, (SELECT count(*) FROM del) AS deleted FROM target t;

-- name: queue_clear
-- Cancel every pending job of a project (the same path as cancelling each one).
SELECT count(wn_cancel(j.id, 'queue cleared', :actor))
  FROM (SELECT id FROM jobs WHERE project_id = wn_project_id(:project) AND status = 'PENDING'
         ORDER BY id FOR UPDATE) j;

-- name: job_enqueue
-- Queue a batch (a JSON array of wn_job_entry objects): the ids in batch order (an entry whose
-- unique key the project had gets that job's id, and its index is in existing), the tasks it
-- created, the warnings (parameters no placeholder uses), and the jobs a waiting claim (:claim,
-- its wn_claim arguments) took in the same transaction; with them what the answer and the metrics
-- need, so that a submission is this one statement: the project's name and, when the batch
-- created tasks, the names of the tasks the project had before (oldest first, for "did you mean").
SELECT e.ids, e.created_tasks, e.claimed, e.existing, e.warnings, p.name AS project_name,
       CASE WHEN e.created_tasks IS NOT NULL THEN
           ARRAY(SELECT t.name FROM tasks t WHERE t.project_id = p.id AND t.name <> ALL (e.created_tasks)
                  ORDER BY t.id) END AS known_tasks
  FROM wn_enqueue(:project, :jobs::jsonb, :actor, :claim::jsonb) e
  JOIN projects p ON p.id = wn_project_id(:project);

-- name: job_enqueue_one
-- Queue one job as job_enqueue does, answering with the job as GET /jobs/{id} shows it (wn_job
-- sees the row wn_enqueue inserted: both run in this statement, one after the other), or with the
-- job its unique key belonged to.
SELECT e.ids, e.created_tasks, e.claimed, e.existing, e.warnings, j.project AS project_name,
       CASE WHEN e.created_tasks IS NOT NULL THEN
           ARRAY(SELECT t.name FROM tasks t WHERE t.project_id = j.project_id
                    AND t.name <> ALL (e.created_tasks) ORDER BY t.id) END AS known_tasks,
       j.*
  FROM wn_enqueue(:project, :jobs::jsonb, :actor, :claim::jsonb) e
 CROSS JOIN LATERAL wn_job(e.ids[1]) j;

-- name: job_claim
SELECT * FROM wn_claim(:project, :worker_id, :worker_name, :free_cpu, :free_accelerators,
                       :total_cpu, :total_accelerators, :tags, :max_jobs, :lease_seconds,
                       :starvation_seconds, :tasks::text[], :with_command, :actor::text,
                       :time_left::float8);

-- name: job_end_attempts
-- End attempts (reports of workers): one (ord, id, code, status, message) row per entry, in order,
-- with the job's project and task names and whether this call ended the attempt (for metrics);
-- :token, a worker token's id, refuses (403) the jobs its workers do not hold.
SELECT ord, id, code, status, message, project_name, task_name, changed
  FROM wn_end_attempts(:changes::jsonb, :actor, :token::bigint);

-- name: job_started
SELECT code, status, message FROM wn_job_started(:job_id, :attempt, :external_id, :gpus);

-- name: job_cancel
SELECT wn_cancel(:job_id, :reason, :actor);

-- name: job_retry
SELECT wn_retry(:job_id, :actor);

-- name: job_requeue
-- An operator hands a running job back to the queue: its worker stops the attempt, which ends
-- PREEMPTED (no attempt used); WN409 unless RUNNING.
SELECT wn_requeue(:job_id, :actor);

-- name: job_events
-- A job's history, oldest first: its creation (recorded on its row: when, who; "scheduled by
-- NAME" when a schedule made it), then every status change; the worker that took part (its id
-- and registered name) apart from the actor, and the checkpoint an attempt named when it ended.
SELECT h.status, h.attempt, h.worker_id, w.name AS worker, h.reason, h.actor, h.checkpoint, h.at
  FROM (SELECT 0 AS part, 0::bigint AS id, 'PENDING'::text AS status, 0 AS attempt, NULL::bigint AS worker_id,
               coalesce('scheduled by ' || (SELECT s.name FROM schedules s WHERE s.id = j.schedule_id),
                        'created') AS reason,
               j.created_by AS actor, NULL::text AS checkpoint, j.created_at AS at
          FROM jobs j WHERE j.id = :job_id
        UNION ALL
        SELECT 1, e.id, e.status, e.attempt, e.worker_id, e.reason, e.actor, e.checkpoint, e.at
          FROM job_events e WHERE e.job_id = :job_id) h
  LEFT JOIN workers w ON w.id = h.worker_id
 ORDER BY h.part, h.id;

-- name: job_dependencies
-- Direct upstream and downstream jobs of one job, with their statuses and each dependency's condition.
SELECT 'upstream' AS direction, j.id, j.name, j.status, jd.condition AS "on"
  FROM job_dependencies jd JOIN jobs j ON j.id = jd.depends_on WHERE jd.job_id = :job_id
UNION ALL
SELECT 'downstream', j.id, j.name, j.status, jd.condition
  FROM job_dependencies jd JOIN jobs j ON j.id = jd.job_id WHERE jd.depends_on = :job_id
ORDER BY 1 DESC, 2;

-- name: project_graph_nodes
SELECT j.id, j.name, t.name AS task, j.status, j.priority
  FROM jobs j JOIN tasks t ON t.id = j.task_id WHERE j.project_id = wn_project_id(:project) ORDER BY j.id LIMIT :limit;

-- name: project_graph_edges
SELECT jd.depends_on AS source, jd.job_id AS target, jd.condition AS "on"
  FROM job_dependencies jd JOIN jobs j ON j.id = jd.job_id
 WHERE j.project_id = wn_project_id(:project) ORDER BY 1, 2 LIMIT :limit;

-- name: advance_claim_marks
-- Move each project's claim mark forward to its first job that can be handed out
-- (wn_advance_marks, see migration 0019): how many marks moved. :from_start also moves back a
-- mark that lies after a job that can be handed out.
SELECT wn_advance_marks(:from_start::boolean) AS moved;
