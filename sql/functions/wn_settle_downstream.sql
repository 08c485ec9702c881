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
-- Returns how many jobs changed status.
CREATE OR REPLACE FUNCTION wn_settle_downstream(p_ups bigint[], p_actor text DEFAULT NULL,
                                                p_notify boolean DEFAULT true)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_level bigint[] := p_ups;
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
            SELECT d.id, d.status AS old_status, d.unmet_deps AS old_unmet, s.waiting, bad.root, bad.reason,
                   CASE WHEN bad.root IS NULL THEN 'PENDING' ELSE 'BLOCKED' END AS new_status
              FROM jobs d
             CROSS JOIN LATERAL (
                   SELECT count(*) FILTER (WHERE u.status IN ('PENDING', 'RUNNING'))::integer AS waiting
                     FROM job_dependencies jd JOIN jobs u ON u.id = jd.depends_on
                    WHERE jd.job_id = d.id) s
              LEFT JOIN LATERAL (
                   SELECT CASE WHEN u.status = 'BLOCKED' AND jd.condition = 'success'
                               THEN coalesce(u.blocked_by, u.id) ELSE u.id END AS root,
                          CASE WHEN u.status = 'BLOCKED' AND jd.condition = 'success'
                                 THEN coalesce(u.error, format('dependency %s (%s) is blocked', u.id, u.name))
                               WHEN u.status = 'BLOCKED'
                                 THEN format('dependency %s (%s) is blocked: it will not run, so it cannot fail',
                                             u.id, u.name)
                               WHEN jd.condition = 'failure'
                                 THEN format('dependency %s (%s) completed: this job runs only if it fails',
                                             u.id, u.name)
                               WHEN u.status = 'FAILED' THEN format('dependency %s (%s) failed', u.id, u.name)
                               ELSE format('dependency %s (%s) was cancelled', u.id, u.name) END AS reason
                     FROM job_dependencies jd JOIN jobs u ON u.id = jd.depends_on
                    WHERE jd.job_id = d.id
                      AND CASE jd.condition
                            WHEN 'success' THEN u.status IN ('FAILED', 'CANCELLED', 'BLOCKED')
                            WHEN 'failure' THEN u.status IN ('COMPLETED', 'BLOCKED')
                            ELSE false END
                    ORDER BY u.id LIMIT 1) bad ON true
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
        v_level := r.moved;
    END LOOP;
    IF p_notify AND cardinality(v_eligible) > 0 THEN
        PERFORM wn_notify_eligible(v_project, v_eligible, 's' || v_eligible[1]);
    END IF;
    RETURN v_changed;
END $$;
