-- Jobs by project and status from job_counts (kept by wn_count_jobs): of one project, or of every
-- project when p_project is NULL. A status without jobs has no row, as with a GROUP BY over jobs.
CREATE OR REPLACE FUNCTION wn_job_counts(p_project bigint DEFAULT NULL)
RETURNS TABLE (project_id bigint, status text, n bigint)
LANGUAGE sql STABLE AS $$
    SELECT c.project_id, c.status, sum(c.n)::bigint
      FROM job_counts c
     WHERE p_project IS NULL OR c.project_id = p_project
     GROUP BY c.project_id, c.status
    HAVING sum(c.n) <> 0
$$;
