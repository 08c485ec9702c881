-- A running attempt is asked to stop (a cancel, an operator's requeue): its history says so, and
-- its worker hears it at once through its events stream (NOTIFY whatsnext_workers, payload the
-- worker's id, sent at commit), or else from its next heartbeat's answer.
CREATE OR REPLACE FUNCTION wn_stop_requested(p_job bigint, p_project bigint, p_attempt integer,
                                             p_worker bigint, p_reason text, p_actor text)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_events (job_id, project_id, status, attempt, worker_id, reason, actor)
    VALUES (p_job, p_project, 'RUNNING', p_attempt, p_worker, p_reason, p_actor);
    IF p_worker IS NOT NULL THEN
        PERFORM pg_notify('whatsnext_workers', p_worker::text);
    END IF;
END $$;
