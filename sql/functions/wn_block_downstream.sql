-- Mark every pending job downstream of p_root BLOCKED (transitively), naming the root in the reason.
CREATE OR REPLACE FUNCTION wn_block_downstream(p_root bigint, p_reason text, p_actor text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_count integer;
BEGIN
    WITH RECURSIVE down(id) AS (
        SELECT job_id FROM job_dependencies WHERE depends_on = p_root
        UNION
        SELECT jd.job_id FROM job_dependencies jd JOIN down ON jd.depends_on = down.id
    ), upd AS (
        UPDATE jobs j SET status = 'BLOCKED', blocked_by = p_root, error = p_reason, eligible_at = NULL
        FROM down WHERE j.id = down.id AND j.status = 'PENDING'
        RETURNING j.id, j.project_id, j.attempt
    ), ev AS (
        INSERT INTO job_events (job_id, project_id, status, attempt, reason, actor)
        SELECT id, project_id, 'BLOCKED', attempt, p_reason, p_actor FROM upd
    )
    SELECT count(*) INTO v_count FROM upd;
    RETURN v_count;
END $$;
