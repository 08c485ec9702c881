-- Extend the leases of a worker's running jobs; answer the ids of those to stop: cancelled, or
-- requeued by an operator (the worker stops both alike; how the attempt then ends is decided by
-- wn_end_attempts).
-- p_running (optional) lists the jobs the worker really runs: a job the server thinks it holds
-- but that it does not (a claim answer lost on the way) older than p_grace seconds ends as LOST
-- (back to the queue without using an attempt).
-- The worker is seen now, with this lease (p_lease): a LOST worker is ONLINE again
-- (wn_worker_status), and one that had left (OFFLINE) is back.
-- The worker's running jobs are read once, without locks, and then locked and updated by id (the
-- conditions on worker and status written so that no index but the primary key can serve them):
-- while a long transaction holds back the xmin horizon, that read passes the index entries of
-- every job the worker ran since, and rows locked meanwhile would hold back the reports of its
-- running jobs.
CREATE OR REPLACE FUNCTION wn_heartbeat(p_worker bigint, p_lease double precision, p_running bigint[],
                                        p_grace double precision) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    v_cancel bigint[];
    v_lost jsonb;
    v_name text;
    v_mine bigint[];
BEGIN
    UPDATE workers SET last_seen = now(), status = 'ONLINE', lease_seconds = p_lease
     WHERE id = p_worker RETURNING name INTO v_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'worker % not found', p_worker USING ERRCODE = 'WN404', DETAIL = 'worker_id';
    END IF;
    v_mine := ARRAY(SELECT j.id FROM jobs j WHERE j.worker_id = p_worker AND j.status = 'RUNNING');
    IF p_running IS NOT NULL THEN
        SELECT jsonb_agg(jsonb_build_object('id', s.id, 'attempt', s.attempt, 'outcome', 'LOST',
                                            'error', 'claimed but never received by its worker'))
          INTO v_lost
          FROM (SELECT j.id, j.attempt FROM jobs j
                 WHERE j.id = ANY (v_mine) AND NOT (j.id = ANY (p_running))
                   AND (j.worker_id = p_worker AND j.status = 'RUNNING') IS TRUE
                   AND j.started_at < now() - make_interval(secs => p_grace)
                 ORDER BY j.id FOR UPDATE SKIP LOCKED) s;
        IF v_lost IS NOT NULL THEN
            PERFORM wn_end_attempts(v_lost, 'worker ' || v_name);
        END IF;
    END IF;
    WITH upd AS (
        UPDATE jobs SET lease_expires_at = now() + make_interval(secs => p_lease)
         WHERE id = ANY (v_mine) AND (worker_id = p_worker AND status = 'RUNNING') IS TRUE
        RETURNING id, cancel_requested OR coalesce(requeue_attempt = attempt, false) AS stop
    )
    SELECT coalesce(array_agg(id ORDER BY id) FILTER (WHERE stop), '{}') INTO v_cancel FROM upd;
    RETURN v_cancel;
END $$;
