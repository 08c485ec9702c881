-- Put a FAILED or CANCELLED job back to PENDING with fresh attempt, lost-worker and preemption
-- budgets (its checkpoint stays, for its next attempt); what waits on it settles again
-- (wn_settle_downstream: what it blocked is released, and a dependant waiting for it to finish
-- waits again). The failed or cancelled jobs upstream of it are retried with it; retrying a
-- BLOCKED job retries just those.
-- Returns how many jobs went back to the queue.
CREATE OR REPLACE FUNCTION wn_retry(p_job bigint, p_actor text DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    j jobs%ROWTYPE;
    v_roots bigint[];
    v_count integer;
BEGIN
    SELECT * INTO j FROM jobs WHERE id = p_job FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job % not found', p_job USING ERRCODE = 'WN404', DETAIL = 'job_id';
    END IF;
    IF j.status NOT IN ('FAILED', 'CANCELLED', 'BLOCKED') THEN
        RAISE EXCEPTION 'job % is %: only FAILED, CANCELLED or BLOCKED jobs can be retried', p_job, j.status
            USING ERRCODE = 'WN409', DETAIL = 'status';
    END IF;
    -- Whatever failed or was cancelled upstream is retried too: otherwise the job would wait
    -- forever on a dependency that will never complete.
    WITH RECURSIVE up(id) AS (
        SELECT depends_on FROM job_dependencies WHERE job_id = p_job
        UNION
        SELECT jd.depends_on FROM job_dependencies jd JOIN up ON jd.job_id = up.id
    )
    SELECT array_agg(u.id ORDER BY u.id) INTO v_roots
      FROM up JOIN jobs u ON u.id = up.id WHERE u.status IN ('FAILED', 'CANCELLED');
    IF j.status IN ('FAILED', 'CANCELLED') THEN
        v_roots := coalesce(v_roots, '{}') || p_job;
    END IF;
    IF v_roots IS NULL THEN
        RETURN 0;
    END IF;
    WITH upd AS (
        UPDATE jobs SET status = 'PENDING', attempt_base = attempt, lost = 0, preempted = 0,
               cancel_requested = false, error = NULL, exit_code = NULL, finished_at = NULL, worker_id = NULL,
               available_at = now(), eligible_at = CASE WHEN unmet_deps = 0 THEN now() END
         WHERE id = ANY (v_roots)
        RETURNING id, project_id, attempt, unmet_deps
    ), ev AS (
        INSERT INTO job_events (job_id, project_id, status, attempt, reason, actor)
        SELECT id, project_id, 'PENDING', attempt, 'retried', p_actor FROM upd
    )
    SELECT count(*) INTO v_count FROM upd;
    PERFORM wn_notify_eligible(j.project_id, v_roots, 't' || p_job);
    -- The retried jobs and what waits on them are judged anew from all their dependencies: a
    -- retried job's own count was not kept while it was final.
    RETURN cardinality(v_roots) + wn_settle_downstream(
        v_roots || ARRAY(SELECT jd.depends_on FROM job_dependencies jd WHERE jd.job_id = ANY (v_roots)),
        p_actor);
END $$;
