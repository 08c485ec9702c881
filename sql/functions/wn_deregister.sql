-- A worker leaving: mark it offline; the jobs it still holds end as LOST (back to the queue
-- without using an attempt, until max_lost). Returns how many it held.
CREATE OR REPLACE FUNCTION wn_deregister(p_worker bigint) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_lost jsonb;
    v_name text;
BEGIN
    UPDATE workers SET status = 'OFFLINE', last_seen = now() WHERE id = p_worker RETURNING name INTO v_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'worker % not found', p_worker USING ERRCODE = 'WN404', DETAIL = 'worker_id';
    END IF;
    SELECT jsonb_agg(jsonb_build_object('id', s.id, 'attempt', s.attempt, 'outcome', 'LOST',
                                        'error', 'worker stopped'))
      INTO v_lost
      FROM (SELECT j.id, j.attempt FROM jobs j WHERE j.worker_id = p_worker AND j.status = 'RUNNING'
             ORDER BY j.id FOR UPDATE) s;
    IF v_lost IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM wn_end_attempts(v_lost, 'worker ' || v_name);
    RETURN jsonb_array_length(v_lost);
END $$;
