-- Run again what ran over the results of p_ups (jobs that were just put back in the queue): the
-- jobs downstream of them, transitively and in any group, that already ran (COMPLETED, FAILED or
-- CANCELLED; a dependant that runs now, or has not run yet, is left alone). Each goes back to
-- PENDING with fresh attempt, lost-worker and preemption budgets as wn_retry gives them (its
-- checkpoint and last result stay until its next attempt ends), waiting for its dependencies
-- whose upstream job is PENDING or RUNNING (at least the one it reruns after), with a history row
-- naming that upstream job. What waits on them settles again (wn_settle_downstream: a dependant
-- whose dependency can no longer be met is blocked). Returns the ids of the jobs put back, in id
-- order.
CREATE OR REPLACE FUNCTION wn_rerun_downstream(p_ups bigint[], p_actor text DEFAULT NULL)
RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    v_ids bigint[];
    v_project bigint;
BEGIN
    WITH RECURSIVE down(id) AS (
        SELECT jd.job_id
          FROM job_dependencies jd JOIN jobs d ON d.id = jd.job_id
         WHERE jd.depends_on = ANY (p_ups) AND d.status IN ('COMPLETED', 'FAILED', 'CANCELLED')
        UNION
        SELECT jd.job_id
          FROM down JOIN job_dependencies jd ON jd.depends_on = down.id JOIN jobs d ON d.id = jd.job_id
         WHERE d.status IN ('COMPLETED', 'FAILED', 'CANCELLED')
    )
    SELECT array_agg(id ORDER BY id) INTO v_ids FROM down;
    IF v_ids IS NULL THEN
        RETURN '{}';
    END IF;
    PERFORM 1 FROM jobs WHERE id = ANY (v_ids) ORDER BY id FOR UPDATE;
    WITH upd AS (
        UPDATE jobs SET status = 'PENDING', attempt_base = attempt, lost = 0, preempted = 0,
               cancel_requested = false, error = NULL, exit_code = NULL, finished_at = NULL,
               worker_id = NULL, blocked_by = NULL, available_at = now(), eligible_at = NULL
         WHERE id = ANY (v_ids) AND status IN ('COMPLETED', 'FAILED', 'CANCELLED')
        RETURNING id
    )
    SELECT array_agg(id ORDER BY id) INTO v_ids FROM upd;
    IF v_ids IS NULL THEN
        RETURN '{}';
    END IF;
    -- With all of them PENDING, each waits for what is PENDING or RUNNING upstream of it.
    WITH w AS (
        SELECT jd.job_id AS id,
               count(*) FILTER (WHERE u.status IN ('PENDING', 'RUNNING'))::integer AS waiting,
               min(u.id) FILTER (WHERE u.id = ANY (p_ups) OR u.id = ANY (v_ids)) AS after
          FROM job_dependencies jd JOIN jobs u ON u.id = jd.depends_on
         WHERE jd.job_id = ANY (v_ids)
         GROUP BY jd.job_id
    ), upd AS (
        UPDATE jobs j SET unmet_deps = w.waiting, eligible_at = CASE WHEN w.waiting = 0 THEN now() END
          FROM w WHERE j.id = w.id
        RETURNING j.id, j.project_id, j.attempt, w.after
    )
    INSERT INTO job_events (job_id, project_id, status, attempt, reason, actor)
    SELECT id, project_id, 'PENDING', attempt, format('rerun: upstream %s retried', after), p_actor
      FROM upd;
    PERFORM wn_settle_downstream(p_ups || v_ids, p_actor);
    FOR v_project IN SELECT DISTINCT project_id FROM jobs WHERE id = ANY (v_ids) LOOP
        PERFORM wn_notify_eligible(v_project, v_ids, 'd' || v_ids[1]);
    END LOOP;
    RETURN v_ids;
END $$;
