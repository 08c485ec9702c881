-- Put the jobs that wait on p_ups (jobs that just reached, or just left, a state they do not leave
-- by themselves: COMPLETED, FAILED, CANCELLED, BLOCKED) in the state their dependencies now call
-- for, and so on downstream. Each dependency has a condition (job_dependencies.condition):
--   success   met when the upstream COMPLETED; can no longer be met once it FAILED, was CANCELLED
--             or is BLOCKED
--   finished  met once the upstream is COMPLETED, FAILED, CANCELLED or BLOCKED; never fails
--   failure   met when the upstream FAILED or was CANCELLED; can no longer be met once it
--             COMPLETED or is BLOCKED
-- A PENDING or BLOCKED dependant is BLOCKED while one of its dependencies can no longer be met
-- (blocked_by and error name the first; behind a blocked upstream, that one's cause), else PENDING
-- with unmet_deps = how many of its upstream jobs are still PENDING or RUNNING. A dependant that
-- already ran is left alone. Every status change gets a history row; a dependant that changed
-- between PENDING and BLOCKED is itself settled downstream; what became eligible is announced
-- (unless p_notify is false: the caller announces it).
--
-- p_was_waiting says what p_ups were before: true, all were PENDING or RUNNING (they just ended);
-- false, all were final (they were just put back); NULL, not known. When it is known, a PENDING
-- dependant is settled from the edges to p_ups alone (its unmet count moves by their change, a
-- condition among them that can no longer be met blocks it): an aggregate waiting on a group of
-- ten thousand jobs costs the same at each member's end as one waiting on a single job. A BLOCKED
-- dependant, one that is among p_ups itself, or any dependant when it is not known, is judged from
-- all its dependencies (the count of a job is kept only while it is PENDING or BLOCKED).
-- Its statements run with generic plans: planned once per session, whatever the level's size (a
-- custom plan would be planned again at every call, a few milliseconds each).
-- Returns how many jobs changed status.
CREATE OR REPLACE FUNCTION wn_settle_downstream(p_ups bigint[], p_actor text DEFAULT NULL,
                                                p_notify boolean DEFAULT true,
                                                p_was_waiting boolean DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_level bigint[] := p_ups;
    -- Which of v_level were PENDING or RUNNING before (only when v_known).
    v_before bigint[] := CASE WHEN p_was_waiting THEN p_ups ELSE '{}' END;
    v_known boolean := p_was_waiting IS NOT NULL;
    v_changed integer := 0;
    v_eligible bigint[] := '{}';
    v_project bigint;
    r record;
BEGIN
    LOOP
        -- Lock the dependants in id order: concurrent settles cannot deadlock.
        PERFORM 1 FROM jobs d
         WHERE d.id IN (SELECT jd.job_id FROM job_dependencies jd WHERE jd.depends_on = ANY (v_level))
           AND d.status IN ('PENDING', 'BLOCKED')
         ORDER BY d.id FOR UPDATE;
        WITH dep AS (
            SELECT d.id, d.status AS old_status, d.unmet_deps AS old_unmet,
                   coalesce(part.waiting, whole.waiting) AS waiting,
                   coalesce(part.root, whole.root) AS root, coalesce(part.reason, whole.reason) AS reason,
                   CASE WHEN coalesce(part.root, whole.root) IS NULL THEN 'PENDING' ELSE 'BLOCKED' END
                     AS new_status
              FROM jobs d
              -- A PENDING dependant when what p_ups were is known: the edges to this level only.
              LEFT JOIN LATERAL (
                   SELECT d.unmet_deps
                            + sum(CASE WHEN u.status IN ('PENDING', 'RUNNING') THEN 1 ELSE 0 END
                                  - CASE WHEN u.id = ANY (v_before) THEN 1 ELSE 0 END)::integer AS waiting,
                          (array_agg(b.root ORDER BY u.id) FILTER (WHERE b.root IS NOT NULL))[1] AS root,
                          (array_agg(b.reason ORDER BY u.id) FILTER (WHERE b.root IS NOT NULL))[1] AS reason
                     FROM job_dependencies jd JOIN jobs u ON u.id = jd.depends_on
                    CROSS JOIN LATERAL wn_dependency_bar(jd.condition, u.id, u.name, u.status, u.blocked_by,
                                                         u.error) b
                    WHERE v_known AND d.status = 'PENDING' AND NOT d.id = ANY (v_level)
                      AND jd.job_id = d.id AND jd.depends_on = ANY (v_level)) part ON true
              -- Otherwise: all its dependencies.
              LEFT JOIN LATERAL (
                   SELECT count(*) FILTER (WHERE u.status IN ('PENDING', 'RUNNING'))::integer AS waiting,
                          (array_agg(b.root ORDER BY u.id) FILTER (WHERE b.root IS NOT NULL))[1] AS root,
                          (array_agg(b.reason ORDER BY u.id) FILTER (WHERE b.root IS NOT NULL))[1] AS reason
                     FROM job_dependencies jd JOIN jobs u ON u.id = jd.depends_on
                    CROSS JOIN LATERAL wn_dependency_bar(jd.condition, u.id, u.name, u.status, u.blocked_by,
                                                         u.error) b
                    WHERE NOT (v_known AND d.status = 'PENDING' AND NOT d.id = ANY (v_level))
                      AND jd.job_id = d.id) whole ON true
             WHERE d.id IN (SELECT jd.job_id FROM job_dependencies jd WHERE jd.depends_on = ANY (v_level))
               AND d.status IN ('PENDING', 'BLOCKED')
        ), upd AS (
            UPDATE jobs j
               SET status = dep.new_status,
                   unmet_deps = dep.waiting,
                   blocked_by = dep.root,
                   error = CASE WHEN dep.new_status = 'BLOCKED' THEN dep.reason END,
                   eligible_at = CASE WHEN dep.new_status = 'BLOCKED' OR dep.waiting > 0 THEN NULL
                                      WHEN dep.old_status = 'PENDING' AND dep.old_unmet = 0 THEN j.eligible_at
                                      ELSE greatest(j.available_at, now()) END,
                   available_at = CASE WHEN dep.new_status = 'PENDING' AND dep.waiting = 0
                                            AND NOT (dep.old_status = 'PENDING' AND dep.old_unmet = 0)
                                       THEN greatest(j.available_at, now()) ELSE j.available_at END
              FROM dep
             WHERE j.id = dep.id
               AND (dep.new_status <> dep.old_status OR dep.waiting <> dep.old_unmet
                    OR (dep.new_status = 'BLOCKED' AND j.blocked_by IS DISTINCT FROM dep.root))
            RETURNING j.id, j.project_id, j.attempt, j.error, dep.old_status, dep.new_status,
                      dep.waiting, dep.old_unmet
        ), ev AS (
            INSERT INTO job_events (job_id, project_id, status, attempt, reason, actor)
            SELECT id, project_id, new_status, attempt,
                   CASE WHEN new_status = 'BLOCKED' THEN error
                        ELSE 'released: its dependencies can be met again' END,
                   p_actor
              FROM upd WHERE new_status <> old_status
        )
        SELECT array_agg(id) FILTER (WHERE new_status <> old_status) AS moved,
               array_agg(id) FILTER (WHERE new_status = 'BLOCKED' AND old_status = 'PENDING') AS stopped,
               array_agg(id) FILTER (WHERE new_status = 'PENDING' AND waiting = 0
                                       AND NOT (old_status = 'PENDING' AND old_unmet = 0)) AS ready,
               min(project_id) AS project
          INTO r FROM upd;
        IF r.project IS NOT NULL THEN
            v_project := r.project;
        END IF;
        v_eligible := v_eligible || coalesce(r.ready, '{}');
        EXIT WHEN r.moved IS NULL;
        v_changed := v_changed + cardinality(r.moved);
        -- The next level: the jobs that moved, each known to have been waiting (PENDING, now
        -- BLOCKED) or not (BLOCKED, now PENDING).
        v_level := r.moved;
        v_before := coalesce(r.stopped, '{}');
        v_known := true;
    END LOOP;
    IF p_notify AND cardinality(v_eligible) > 0 THEN
        PERFORM wn_notify_eligible(v_project, v_eligible, 's' || v_eligible[1]);
    END IF;
    RETURN v_changed;
END $$;
