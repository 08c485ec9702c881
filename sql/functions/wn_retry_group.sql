-- Put a group's FAILED and CANCELLED jobs back in the queue, those of the kinds chosen:
--   p_failed     FAILED jobs whose last attempt did not end LOST (a failure of their own)
--   p_lost       FAILED jobs whose last attempt ended LOST (last_outcome 'LOST': their worker
--                went away one time too many)
--   p_cancelled  CANCELLED jobs
-- each with wn_retry (fresh budgets; the failed or cancelled jobs upstream of it go back with it;
-- what waits on it settles again). A job that an earlier retry of this call already put back (it
-- was upstream of another) is skipped. With p_downstream, the dependants (transitively, in any
-- group) of what went back that already ran, over the results of then, go back too and wait for
-- their upstream jobs' new run (wn_rerun_downstream).
-- ids: every job this call put back in the queue (PENDING now, in id order): the chosen ones, what
-- went back with them upstream, what they had blocked and, with p_downstream, the dependants that
-- had run; downstream: those last ones.
CREATE OR REPLACE FUNCTION wn_retry_group(p_group bigint, p_actor text DEFAULT NULL,
                                          p_failed boolean DEFAULT true, p_cancelled boolean DEFAULT true,
                                          p_lost boolean DEFAULT true, p_downstream boolean DEFAULT false,
                                          OUT ids bigint[], OUT downstream bigint[])
LANGUAGE plpgsql AS $$
DECLARE
    v_chosen bigint[];
    v_scope bigint[];
    v_before bigint[];
    v_back bigint[];
    v_id bigint;
BEGIN
    ids := '{}';
    downstream := '{}';
    SELECT array_agg(j.id ORDER BY j.id) INTO v_chosen
      FROM jobs j
     WHERE j.group_id = p_group
       AND CASE j.status
             WHEN 'CANCELLED' THEN p_cancelled
             WHEN 'FAILED' THEN CASE WHEN j.last_outcome = 'LOST' THEN p_lost ELSE p_failed END
             ELSE false END;
    IF v_chosen IS NULL THEN
        RETURN;
    END IF;
    -- Every job this call may put back: the chosen ones and what is failed, cancelled or blocked
    -- upstream of them (the roots), then downstream of those what is blocked (and, to rerun, what
    -- already ran). Locked in id order, so that what went back is told from its status before.
    WITH RECURSIVE up(id) AS (
        SELECT depends_on FROM job_dependencies WHERE job_id = ANY (v_chosen)
        UNION
        SELECT jd.depends_on FROM job_dependencies jd JOIN up ON jd.job_id = up.id
    ), roots(id) AS (
        SELECT unnest(v_chosen)
        UNION
        SELECT u.id FROM up JOIN jobs u ON u.id = up.id WHERE u.status IN ('FAILED', 'CANCELLED', 'BLOCKED')
    ), down(id) AS (
        SELECT id FROM roots
        UNION
        SELECT jd.job_id
          FROM down JOIN job_dependencies jd ON jd.depends_on = down.id JOIN jobs d ON d.id = jd.job_id
         WHERE d.status = 'BLOCKED'
            OR (p_downstream AND d.status IN ('COMPLETED', 'FAILED', 'CANCELLED'))
    )
    SELECT array_agg(id ORDER BY id) INTO v_scope FROM down;
    PERFORM 1 FROM jobs WHERE id = ANY (v_scope) ORDER BY id FOR UPDATE;
    SELECT coalesce(array_agg(id), '{}') INTO v_before
      FROM jobs WHERE id = ANY (v_scope) AND status NOT IN ('PENDING', 'RUNNING');

    FOREACH v_id IN ARRAY v_chosen LOOP
        IF EXISTS (SELECT 1 FROM jobs WHERE id = v_id AND status IN ('FAILED', 'CANCELLED')) THEN
            PERFORM wn_retry(v_id, p_actor);
        END IF;
    END LOOP;

    IF p_downstream THEN
        SELECT coalesce(array_agg(id ORDER BY id), '{}') INTO v_back
          FROM jobs WHERE id = ANY (v_before) AND status = 'PENDING';
        downstream := wn_rerun_downstream(v_back, p_actor);
    END IF;
    SELECT coalesce(array_agg(id ORDER BY id), '{}') INTO ids
      FROM jobs WHERE id = ANY (v_before) AND status = 'PENDING';
    SELECT coalesce(array_agg(id ORDER BY id), '{}') INTO downstream
      FROM jobs WHERE id = ANY (downstream) AND status = 'PENDING';
END $$;
