-- The jobs retention may delete: finished (COMPLETED, FAILED, CANCELLED) before p_cutoff, of
-- project p_project (NULL: every project), unless the job or a job downstream of it (one that
-- depends on it, directly or through others) is not finished (PENDING, RUNNING or BLOCKED) or is
-- a member of a group with a member that is not finished. So whatever may still run keeps every
-- job upstream of it, with the results it reads, and a group that may still be retried keeps its
-- members and what they read. BLOCKED jobs are not finished (retrying what they wait for releases
-- them) and carry no finished_at.
-- A single SQL query: inlined into the statements that read it (wn_prune), whose own conditions
-- (an order and a limit, a list of ids) reach its scan; the walk downstream is per job, a probe
-- of job_dependencies for a job nothing depends on.
CREATE OR REPLACE FUNCTION wn_prunable(p_cutoff timestamptz, p_project bigint)
RETURNS TABLE (id bigint, group_id bigint, finished_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT j.id, j.group_id, j.finished_at
      FROM jobs j
     WHERE j.status IN ('COMPLETED', 'FAILED', 'CANCELLED') AND j.finished_at < p_cutoff
       AND (p_project IS NULL OR j.project_id = p_project)
       AND NOT EXISTS (
           WITH RECURSIVE down (id) AS (
               SELECT j.id
               UNION
               SELECT d.job_id FROM job_dependencies d JOIN down ON d.depends_on = down.id
           )
           SELECT 1
             FROM down JOIN jobs c ON c.id = down.id
            WHERE c.status IN ('PENDING', 'RUNNING', 'BLOCKED')
               OR (c.group_id IS NOT NULL
                   AND EXISTS (SELECT 1 FROM jobs m
                                WHERE m.group_id = c.group_id
                                  AND m.status IN ('PENDING', 'RUNNING', 'BLOCKED'))))
$$;
