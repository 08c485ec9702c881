-- Cancel a job: a pending or blocked job at once (what waits on it settles: wn_settle_downstream), a running one
-- through its worker (the worker stops it and reports CANCELLED; a lost or failing attempt of a
-- job with a cancel request ends CANCELLED too, see wn_end_attempts). The worker learns it from
-- its events stream, woken by NOTIFY whatsnext_workers (payload: the worker's id) sent in this
-- transaction, or else from its next heartbeat's answer.
CREATE OR REPLACE FUNCTION wn_cancel(p_job bigint, p_reason text, p_actor text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    j jobs%ROWTYPE;
BEGIN
    SELECT * INTO j FROM jobs WHERE id = p_job FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job % not found', p_job USING ERRCODE = 'WN404', DETAIL = 'job_id';
    END IF;
    IF j.status = 'RUNNING' THEN
        UPDATE jobs SET cancel_requested = true WHERE id = p_job;
        IF NOT j.cancel_requested THEN
            PERFORM wn_stop_requested(p_job, j.project_id, j.attempt, j.worker_id, 'cancel requested', p_actor);
        END IF;
        RETURN 'RUNNING';
    ELSIF j.status IN ('PENDING', 'BLOCKED') THEN
        UPDATE jobs SET status = 'CANCELLED', finished_at = now(), error = p_reason, eligible_at = NULL
         WHERE id = p_job;
        INSERT INTO job_events (job_id, project_id, status, attempt, reason, actor)
        VALUES (p_job, j.project_id, 'CANCELLED', j.attempt, p_reason, p_actor);
        -- A PENDING job was waiting; a BLOCKED one was final already: its dependants are judged anew.
        PERFORM wn_settle_downstream(ARRAY[p_job], p_actor, true, CASE WHEN j.status = 'PENDING' THEN true END);
        PERFORM wn_notify_jobs(j.project_id, 0);
        RETURN 'CANCELLED';
    END IF;
    RAISE EXCEPTION 'job % is already %', p_job, j.status USING ERRCODE = 'WN409', DETAIL = 'status';
END $$;
