-- One reaper at a time across all servers: jobs whose lease ran out end as LOST (back to the
-- queue without using an attempt, until max_lost). Returns what it did, one row per project,
-- task and resulting status (PENDING: requeued; FAILED: lost too often; CANCELLED: a cancel
-- request was pending), with how many jobs; no rows when nothing expired or another server holds
-- the reaper's lock.
CREATE OR REPLACE FUNCTION wn_reap_jobs(p_limit integer)
RETURNS TABLE (project_name text, task_name text, status text, jobs integer)
LANGUAGE plpgsql AS $$
DECLARE
    v_lost jsonb;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('whatsnext.reaper')) THEN
        RETURN;
    END IF;
    SELECT jsonb_agg(jsonb_build_object('id', s.id, 'attempt', s.attempt, 'outcome', 'LOST',
                                        'error', 'lease expired'))
      INTO v_lost
      FROM (SELECT j.id, j.attempt FROM jobs j
             WHERE j.status = 'RUNNING' AND j.lease_expires_at < now()
             ORDER BY j.lease_expires_at LIMIT p_limit FOR UPDATE SKIP LOCKED) s;
    IF v_lost IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT e.project_name, e.task_name, e.status, count(*)::integer
      FROM wn_end_attempts(v_lost, 'reaper') e
     WHERE e.changed
     GROUP BY e.project_name, e.task_name, e.status
     ORDER BY 1, 2, 3;
END $$;
