-- A job as GET /jobs/{id} shows it (with its project's and task's names, its group, the ids it
-- depends on, and each dependency with its condition); no row for an unknown id. VOLATILE on purpose: called in the statement that
-- queued the job (job_enqueue_one), its query sees what wn_enqueue inserted just before.
CREATE OR REPLACE FUNCTION wn_job(p_job_id bigint)
RETURNS TABLE (id bigint, project_id bigint, project text, name text, task text, parameters jsonb,
               priority integer, status text, unmet_deps integer, required_cpu integer,
               required_accelerators integer, required_tags text[], attempt integer,
               attempts_used integer, max_attempts integer, max_lost integer, lost integer,
               max_preempted integer, preempted integer, retry_delay double precision,
               timeout double precision, worker_id bigint, worker_name text,
               lease_expires_at timestamptz, cancel_requested boolean, created_at timestamptz,
               available_at timestamptz, eligible_at timestamptz, started_at timestamptz,
               finished_at timestamptz, exit_code integer, error text, result jsonb, log_tail text,
               duration double precision, blocked_by bigint, inputs text[], outputs text[],
               external_id text, gpus integer[], group_id bigint, "group" text, depends bigint[],
               concurrency_key text, concurrency_limit integer, checkpoint text, unique_key text,
               task_version integer, depends_on jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT j.id, j.project_id, p.name, j.name, t.name, j.parameters, j.priority, j.status,
           j.unmet_deps, j.required_cpu, j.required_accelerators, j.required_tags, j.attempt,
           j.attempt - j.attempt_base, j.max_attempts, j.max_lost, j.lost, j.max_preempted,
           j.preempted, j.retry_delay, j.timeout, j.worker_id, j.worker_name,
           j.lease_expires_at, j.cancel_requested, j.created_at, j.available_at, j.eligible_at,
           j.started_at, j.finished_at, j.exit_code, j.error, j.result, j.log_tail, j.duration,
           j.blocked_by, j.inputs, j.outputs, j.external_id, j.gpus, j.group_id, g.name,
           (SELECT coalesce(array_agg(d.depends_on ORDER BY d.depends_on), '{}') FROM job_dependencies d
             WHERE d.job_id = j.id),
           j.concurrency_key, j.concurrency_limit, j.checkpoint, j.unique_key, j.task_version,
           (SELECT coalesce(jsonb_agg(jsonb_build_object('id', d.depends_on, 'on', d.condition)
                                      ORDER BY d.depends_on), '[]')
              FROM job_dependencies d WHERE d.job_id = j.id)
      FROM jobs j JOIN tasks t ON t.id = j.task_id JOIN projects p ON p.id = j.project_id
      LEFT JOIN job_groups g ON g.id = j.group_id
     WHERE j.id = p_job_id;
END $$;
