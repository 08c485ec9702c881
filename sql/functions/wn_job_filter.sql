-- The one job filter: the jobs of a project that GET /projects/{p}/jobs (and so `whatsnext jobs
-- ls`) and the dashboard's board and bulk actions list, count or act on. NULL: any.
--   p_statuses      the job is in one of these statuses
--   p_task          its task's name
--   p_group         its group, by name or by id
--   p_name_like     its name matches this LIKE pattern (the API's `name`: * as %, else exact)
--   p_name_contains its name matches this ILIKE pattern (the board's name box: %text%)
--   p_where         its parameters contain this JSON object
--   p_worker        the worker that runs or ran it, by name
-- A SQL function the planner inlines into each statement that reads it (STABLE, not STRICT): the
-- statement's ORDER BY and LIMIT use the indexes as if the conditions were written there.
CREATE OR REPLACE FUNCTION wn_job_filter(p_project bigint, p_statuses text[], p_task text,
                                         p_group text, p_name_like text, p_name_contains text,
                                         p_where jsonb, p_worker text)
RETURNS TABLE (id bigint, name text, task text, "group" text, parameters jsonb, priority integer,
               status text, unmet_deps integer, attempt integer, required_cpu integer,
               required_accelerators integer, worker_name text, created_at timestamptz,
               started_at timestamptz, finished_at timestamptz, exit_code integer, error text,
               result jsonb, duration double precision)
LANGUAGE sql STABLE AS $$
    SELECT j.id, j.name, t.name, g.name, j.parameters, j.priority, j.status, j.unmet_deps,
           j.attempt, j.required_cpu, j.required_accelerators, j.worker_name, j.created_at,
           j.started_at, j.finished_at, j.exit_code, j.error, j.result, j.duration
      FROM jobs j JOIN tasks t ON t.id = j.task_id LEFT JOIN job_groups g ON g.id = j.group_id
     WHERE j.project_id = p_project
       AND (p_statuses IS NULL OR j.status = ANY (p_statuses))
       AND (p_task IS NULL OR t.name = p_task)
       AND (p_group IS NULL OR g.name = p_group OR g.id::text = p_group)
       AND (p_name_like IS NULL OR j.name LIKE p_name_like)
       AND (p_name_contains IS NULL OR j.name ILIKE p_name_contains)
       AND (p_where IS NULL OR j.parameters @> p_where)
       AND (p_worker IS NULL OR j.worker_name = p_worker)
$$;
