-- An operator hands a running job back to the queue: its current attempt is marked, its worker
-- learns it like a cancel (NOTIFY whatsnext_workers with the worker's id, in this transaction;
-- its heartbeat answer lists it too) and stops it, and the attempt then ends PREEMPTED (back to
-- PENDING without using an attempt; see wn_end_attempts). Answers the job's status (RUNNING).
-- Only a running job can be requeued (WN409), and not one whose cancel was requested.
CREATE OR REPLACE FUNCTION wn_requeue(p_job bigint, p_actor text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    j jobs%ROWTYPE;
BEGIN
    SELECT * INTO j FROM jobs WHERE id = p_job FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job % not found', p_job USING ERRCODE = 'WN404', DETAIL = 'job_id';
    END IF;
    IF j.status <> 'RUNNING' THEN
        RAISE EXCEPTION 'job % is %: only a running job can be requeued', p_job, j.status
              USING ERRCODE = 'WN409', DETAIL = 'status';
    END IF;
    IF j.cancel_requested THEN
        RAISE EXCEPTION 'job % is being cancelled: it cannot be requeued', p_job
              USING ERRCODE = 'WN409', DETAIL = 'status';
    END IF;
    IF j.requeue_attempt IS DISTINCT FROM j.attempt THEN
        UPDATE jobs SET requeue_attempt = j.attempt,
                        requeue_reason = 'requeued by ' || coalesce(p_actor, 'an operator')
         WHERE id = p_job;
        PERFORM wn_stop_requested(p_job, j.project_id, j.attempt, j.worker_id, 'requeue requested', p_actor);
    END IF;
    RETURN 'RUNNING';
END $$;
