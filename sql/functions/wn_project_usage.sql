-- Each project's usage of the pool now (p_projects: those projects; NULL: every project), decayed
-- with the pool's half-life: what its ended attempts added (project_usage) and what its running
-- attempts have used so far. usage is in weighted seconds (wn_usage_weight); gpu_seconds and
-- cpu_seconds are the same in GPUs and CPUs; attempts counts ended attempts, decayed alike (usage
-- / attempts: what an attempt of the project recently cost). running_* describe its RUNNING jobs
-- now. Projects that never ran anything answer zeros. (PL/pgSQL: its plan is kept for the
-- session; a claim of several projects reads it every time.)
CREATE OR REPLACE FUNCTION wn_project_usage(p_projects bigint[] DEFAULT NULL)
RETURNS TABLE (
    project_id bigint, share double precision, usage double precision,
    gpu_seconds double precision, cpu_seconds double precision, attempts double precision,
    running_jobs integer, running_cpus integer, running_gpus integer,
    running_weight double precision
)
LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    RETURN QUERY
    WITH s AS (SELECT half_life AS h FROM pool_settings WHERE id = 1),
    ended AS (
        SELECT u.project_id,
               sum(wn_decayed(u.usage, extract(epoch FROM now() - u.updated_at), s.h)) AS usage,
               sum(wn_decayed(u.gpu_seconds, extract(epoch FROM now() - u.updated_at), s.h)) AS gpu,
               sum(wn_decayed(u.cpu_seconds, extract(epoch FROM now() - u.updated_at), s.h)) AS cpu,
               sum(wn_decayed(u.attempts, extract(epoch FROM now() - u.updated_at), s.h)) AS attempts
          FROM project_usage u, s
         WHERE p_projects IS NULL OR u.project_id = ANY (p_projects)
         GROUP BY u.project_id
    ),
    running AS (
        SELECT j.project_id, count(*)::integer AS n, sum(j.required_cpu)::integer AS cpus,
               sum(j.required_accelerators)::integer AS gpus,
               sum(wn_usage_weight(j.required_cpu, j.required_accelerators)) AS weight,
               sum(wn_decayed_span(wn_usage_weight(j.required_cpu, j.required_accelerators),
                                   extract(epoch FROM now() - j.started_at), s.h)) AS usage,
               sum(wn_decayed_span(j.required_accelerators, extract(epoch FROM now() - j.started_at), s.h)) AS gpu,
               sum(wn_decayed_span(j.required_cpu, extract(epoch FROM now() - j.started_at), s.h)) AS cpu
          FROM jobs j, s
         WHERE j.status = 'RUNNING' AND (p_projects IS NULL OR j.project_id = ANY (p_projects))
         GROUP BY j.project_id
    )
    SELECT p.id, p.share,
           coalesce(e.usage, 0) + coalesce(r.usage, 0),
           coalesce(e.gpu, 0) + coalesce(r.gpu, 0),
           coalesce(e.cpu, 0) + coalesce(r.cpu, 0),
           coalesce(e.attempts, 0),
           coalesce(r.n, 0), coalesce(r.cpus, 0), coalesce(r.gpus, 0), coalesce(r.weight, 0)
      FROM projects p
      LEFT JOIN ended e ON e.project_id = p.id
      LEFT JOIN running r ON r.project_id = p.id
     WHERE p_projects IS NULL OR p.id = ANY (p_projects);
END $$;
