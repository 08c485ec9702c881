-- Hand the jobs p_ids (chosen and locked by wn_claim_pick) to a worker: each hand-out is a new
-- attempt, and `attempt` is the fencing token every report, log line and artifact of that attempt
-- must carry. The RUNNING event names the worker (worker_id, and its name as the reason) and, as
-- its actor, p_actor: the token that claimed under --auth (a worker cannot name the actor);
-- without a token, the worker's name. Rows in hand-out order (priority, then id).
-- Each row carries the job's latest checkpoint and whether this attempt resumes (resume: the
-- previous attempt ended PREEMPTED or LOST; last_outcome keeps the outcome of the latest ended
-- attempt while the next one runs).
-- command, defaults and shell are those of the task version the job was submitted with.
-- upstream: for a job with dependencies, what each upstream job left ({id, name, task, status,
-- result, artifacts: [{uri, direction, kind}]}, in id order); NULL for a job without any.
-- PL/pgSQL, not SQL: its statement's plan is kept for the session instead of planned at each call.
CREATE OR REPLACE FUNCTION wn_claim_hand(
    p_ids bigint[], p_worker_id bigint, p_worker_name text, p_lease double precision,
    p_actor text DEFAULT NULL
) RETURNS TABLE (
    id bigint, name text, task text, parameters jsonb, priority integer, attempt integer,
    required_cpu integer, required_accelerators integer, timeout double precision,
    max_attempts integer, max_lost integer, lease_expires_at timestamptz, inputs text[],
    outputs text[], eligible_at timestamptz, previous_external_ids text[], command text,
    defaults jsonb, shell boolean, project text, checkpoint text, resume boolean, upstream jsonb
)
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    WITH upd AS (
        UPDATE jobs j
           SET status = 'RUNNING', attempt = j.attempt + 1, worker_id = p_worker_id,
               worker_name = p_worker_name, started_at = now(), finished_at = NULL,
               lease_expires_at = now() + make_interval(secs => p_lease), cancel_requested = false,
               external_id = NULL, gpus = NULL
         WHERE j.id = ANY (p_ids)
        RETURNING j.id, j.name, j.project_id, j.task_id, j.parameters, j.priority, j.attempt,
                  j.required_cpu, j.required_accelerators, j.timeout, j.max_attempts, j.max_lost,
                  j.lease_expires_at, j.inputs, j.outputs, j.eligible_at, j.lost_external_ids,
                  j.checkpoint, coalesce(j.last_outcome IN ('PREEMPTED', 'LOST'), false) AS resume,
                  j.task_version
    ), ev AS (
        INSERT INTO job_events (job_id, project_id, status, attempt, worker_id, reason, actor)
        SELECT u.id, u.project_id, 'RUNNING', u.attempt, p_worker_id, p_worker_name,
               coalesce(p_actor, p_worker_name)
          FROM upd u
    )
    SELECT u.id, u.name, t.name, u.parameters, u.priority, u.attempt, u.required_cpu,
           u.required_accelerators, u.timeout, u.max_attempts, u.max_lost, u.lease_expires_at,
           u.inputs, u.outputs, u.eligible_at, u.lost_external_ids,
           CASE WHEN v.task_id IS NULL THEN t.command ELSE v.command END,
           CASE WHEN v.task_id IS NULL THEN t.defaults ELSE v.defaults END,
           CASE WHEN v.task_id IS NULL THEN t.shell ELSE v.shell END,
           p.name, u.checkpoint, u.resume,
           (SELECT jsonb_agg(jsonb_build_object(
                       'id', up.id, 'name', up.name, 'task', ut.name, 'status', up.status,
                       'result', up.result,
                       'artifacts', coalesce((SELECT jsonb_agg(jsonb_build_object(
                                                  'uri', a.uri, 'direction', a.direction, 'kind', a.kind)
                                                  ORDER BY a.id)
                                                FROM artifacts a WHERE a.job_id = up.id), '[]'))
                       ORDER BY up.id)
              FROM job_dependencies jd JOIN jobs up ON up.id = jd.depends_on
              JOIN tasks ut ON ut.id = up.task_id
             WHERE jd.job_id = u.id)
      FROM upd u JOIN tasks t ON t.id = u.task_id JOIN projects p ON p.id = u.project_id
      -- An older version only when the task changed since the job was submitted.
      LEFT JOIN task_versions v ON u.task_version <> t.version
                               AND v.task_id = u.task_id AND v.version = u.task_version
     ORDER BY u.priority DESC, u.id;
END $$;
