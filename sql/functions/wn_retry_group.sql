-- Put a group's FAILED and CANCELLED jobs back in the queue, with what they blocked. A job that an
-- earlier retry of this call already requeued (it was upstream of another) is skipped. Returns how
-- many jobs went back to the queue.
CREATE OR REPLACE FUNCTION wn_retry_group(p_group bigint, p_actor text DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
    v_count integer := 0;
BEGIN
    FOR v_id IN SELECT id FROM jobs WHERE group_id = p_group AND status IN ('FAILED', 'CANCELLED')
                 ORDER BY id LOOP
        IF EXISTS (SELECT 1 FROM jobs WHERE id = v_id AND status IN ('FAILED', 'CANCELLED')) THEN
            v_count := v_count + wn_retry(v_id, p_actor);
        END IF;
    END LOOP;
    RETURN v_count;
END $$;
