-- Put BLOCKED jobs downstream of p_roots back to PENDING where nothing else blocks them.
CREATE OR REPLACE FUNCTION wn_release_downstream(p_roots bigint[], p_actor text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_level bigint[] := p_roots;
    v_total integer := 0;
    v_released bigint[] := '{}';
    v_n integer;
    v_project bigint;
    v_found bigint;
BEGIN
    LOOP
        WITH upd AS (
            UPDATE jobs j SET status = 'PENDING', blocked_by = NULL, error = NULL, available_at = now(),
                   eligible_at = CASE WHEN j.unmet_deps = 0 THEN now() END
            WHERE j.status = 'BLOCKED'
              AND j.id IN (SELECT job_id FROM job_dependencies WHERE depends_on = ANY (v_level))
              AND NOT EXISTS (
                  SELECT 1 FROM job_dependencies jd JOIN jobs u ON u.id = jd.depends_on
                  WHERE jd.job_id = j.id AND u.status IN ('FAILED', 'CANCELLED', 'BLOCKED'))
            RETURNING j.id, j.project_id, j.attempt, j.unmet_deps
        ), ev AS (
            INSERT INTO job_events (job_id, project_id, status, attempt, reason, actor)
            SELECT id, project_id, 'PENDING', attempt, 'released: upstream retried', p_actor FROM upd
        )
        SELECT array_agg(id), count(*), min(project_id) INTO v_level, v_n, v_found FROM upd;
        EXIT WHEN v_n = 0;
        v_project := v_found;
        v_total := v_total + v_n;
        v_released := v_released || v_level;
    END LOOP;
    IF v_total > 0 THEN
        PERFORM wn_notify_eligible(v_project, v_released, 'r' || p_roots[1]);
    END IF;
    RETURN v_total;
END $$;
