-- name: job_get
SELECT j.id, j.project_id, p.name AS project, j.name, t.name AS task, j.parameters, j.priority,
       j.status, j.unmet_deps, j.required_cpu, j.required_accelerators, j.required_tags, j.attempt,
       j.max_attempts, j.retry_delay, j.timeout, j.worker_id, j.worker_name, j.lease_expires_at,
       j.cancel_requested, j.created_at, j.available_at, j.started_at, j.finished_at, j.exit_code,
       j.error, j.result, j.log_tail, j.duration, j.blocked_by, j.inputs, j.outputs,
       (SELECT coalesce(array_agg(depends_on ORDER BY depends_on), '{}') FROM job_dependencies
         WHERE job_id = j.id) AS depends
  FROM jobs j JOIN tasks t ON t.id = j.task_id JOIN projects p ON p.id = j.project_id
 WHERE j.id = $1;

-- name: job_list
-- Jobs of a project, newest first, keyset-paginated on id ($4: return ids below this one).
SELECT j.id, j.name, t.name AS task, j.parameters, j.priority, j.status, j.unmet_deps, j.attempt,
       j.required_cpu, j.required_accelerators, j.worker_name, j.created_at, j.started_at,
       j.finished_at, j.exit_code, j.error
  FROM jobs j JOIN tasks t ON t.id = j.task_id
 WHERE j.project_id = wn_project_id($1)
   AND ($2::text IS NULL OR j.status = $2)
   AND ($3::text IS NULL OR t.name = $3)
   AND ($4::bigint IS NULL OR j.id < $4)
 ORDER BY j.id DESC
 LIMIT $5;

-- name: queue_list
-- Pending jobs in hand-out order: eligible ones first (priority, then FIFO), then those still
-- waiting for dependencies or for a retry delay.
SELECT j.id, j.name, t.name AS task, j.parameters, j.priority, j.status, j.unmet_deps, j.attempt,
       j.required_cpu, j.required_accelerators, j.created_at, j.available_at,
       (j.unmet_deps = 0 AND j.available_at <= now()) AS eligible
  FROM jobs j JOIN tasks t ON t.id = j.task_id
 WHERE j.project_id = wn_project_id($1) AND j.status = 'PENDING'
 ORDER BY (j.unmet_deps = 0 AND j.available_at <= now()) DESC, j.priority DESC, j.id
 LIMIT $2 OFFSET $3;

-- name: job_delete
-- Remove a job that is not running and that no unfinished job depends on.
WITH target AS (
    SELECT j.id, j.status,
           EXISTS (SELECT 1 FROM job_dependencies jd JOIN jobs d ON d.id = jd.job_id
                    WHERE jd.depends_on = j.id
                      AND d.status IN ('PENDING', 'RUNNING', 'BLOCKED')) AS has_dependents
      FROM jobs j WHERE j.id = $2 AND j.project_id = wn_project_id($1)
      FOR UPDATE
), del AS (
    DELETE FROM jobs j USING target t
     WHERE j.id = t.id AND t.status <> 'RUNNING' AND NOT t.has_dependents
    RETURNING j.id
)
SELECT t.id, t.status, t.has_dependents, (SELECT count(*) FROM del) AS deleted FROM target t;

-- name: queue_clear
-- Cancel every pending job of a project (the same path as cancelling each one).
SELECT count(wn_cancel(j.id, 'queue cleared'))
  FROM (SELECT id FROM jobs WHERE project_id = wn_project_id($1) AND status = 'PENDING'
         ORDER BY id FOR UPDATE) j;

-- name: job_enqueue
SELECT wn_enqueue($1, $2::jsonb);

-- name: job_claim
SELECT * FROM wn_claim($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11);

-- name: job_report
SELECT code, status, message FROM wn_report_one($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9);

-- name: job_report_many
SELECT id, code, status, message FROM wn_report_many($1::jsonb);

-- name: job_cancel
SELECT wn_cancel($1, $2);

-- name: job_retry
SELECT wn_retry($1);

-- name: job_events
SELECT status, attempt, worker_id, reason, at FROM job_events WHERE job_id = $1 ORDER BY id;

-- name: job_dependencies
-- Direct upstream and downstream jobs of one job, with their statuses.
SELECT 'upstream' AS direction, j.id, j.name, j.status
  FROM job_dependencies jd JOIN jobs j ON j.id = jd.depends_on WHERE jd.job_id = $1
UNION ALL
SELECT 'downstream', j.id, j.name, j.status
  FROM job_dependencies jd JOIN jobs j ON j.id = jd.job_id WHERE jd.depends_on = $1
ORDER BY 1 DESC, 2;

-- name: project_graph_nodes
SELECT j.id, j.name, t.name AS task, j.status, j.priority
  FROM jobs j JOIN tasks t ON t.id = j.task_id WHERE j.project_id = wn_project_id($1) ORDER BY j.id LIMIT $2;

-- name: project_graph_edges
SELECT jd.depends_on AS source, jd.job_id AS target
  FROM job_dependencies jd JOIN jobs j ON j.id = jd.job_id
 WHERE j.project_id = wn_project_id($1) ORDER BY 1, 2 LIMIT $2;
