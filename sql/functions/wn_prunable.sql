-- The jobs retention may delete: finished (COMPLETED, FAILED, CANCELLED) before p_cutoff, of
-- project p_project (NULL: every project), unless a job that is not finished (PENDING, RUNNING or
-- BLOCKED) depends on it, or its group has a member that is not finished. BLOCKED jobs are not
-- finished (retrying what they wait for releases them) and carry no finished_at.
-- A single SQL query: inlined into the statements that read it (wn_prune), whose own conditions
-- (an order and a limit, a list of ids) reach its scan.
CREATE OR REPLACE FUNCTION wn_prunable(p_cutoff timestamptz, p_project bigint)
RETURNS TABLE (id bigint, group_id bigint, finished_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT j.id, j.group_id, j.finished_at
      FROM jobs j
     WHERE j.status IN ('COMPLETED', 'FAILED', 'CANCELLED') AND j.finished_at < p_cutoff
       AND (p_project IS NULL OR j.project_id = p_project)
       AND NOT EXISTS (SELECT 1 FROM job_dependencies d JOIN jobs c ON c.id = d.job_id
                        WHERE d.depends_on = j.id AND c.status IN ('PENDING', 'RUNNING', 'BLOCKED'))
       AND (j.group_id IS NULL
            OR NOT EXISTS (SELECT 1 FROM jobs m
                            WHERE m.group_id = j.group_id AND m.status IN ('PENDING', 'RUNNING', 'BLOCKED')))
$$;
