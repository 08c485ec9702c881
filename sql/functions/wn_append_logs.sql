-- Append output lines of one attempt. Lines of an attempt other than the job's current one are
-- refused (code 409), like a stale report; lines of the current attempt are taken even just after
-- the job finished, so that a worker's last batch never loses a race with its own report.
-- Keeps the job's newest p_keep lines: older ones are deleted and counted in job_log_state.dropped
-- (lines of a batch beyond the newest p_keep are not even written).
-- Followers are woken with NOTIFY whatsnext_logs, '<job_id>'.
CREATE OR REPLACE FUNCTION wn_append_logs(p_job bigint, p_attempt integer, p_lines text[], p_keep integer)
RETURNS TABLE (code integer, status text, message text, appended integer, dropped bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_status text;
    v_attempt integer;
    v_n integer := coalesce(cardinality(p_lines), 0);
    v_total bigint;
    v_dropped bigint;
    v_trimmed bigint;
    v_excess bigint;
    v_gone bigint;
    v_last bigint;
    v_skip integer;
BEGIN
    SELECT j.status, j.attempt INTO v_status, v_attempt FROM jobs j WHERE j.id = p_job;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 404, NULL::text, format('job %s not found', p_job), 0, 0::bigint;
        RETURN;
    END IF;
    IF v_attempt = 0 OR v_attempt <> p_attempt THEN
        RETURN QUERY SELECT 409, v_status,
            format('stale log lines: job %s is at attempt %s, the lines are for attempt %s',
                   p_job, v_attempt, p_attempt),
            0, 0::bigint;
        RETURN;
    END IF;
    IF v_n = 0 THEN
        SELECT s.dropped INTO v_dropped FROM job_log_state s WHERE s.job_id = p_job;
        RETURN QUERY SELECT 200, v_status, NULL::text, 0, coalesce(v_dropped, 0);
        RETURN;
    END IF;

    -- Lines that retention would delete at once are never written (a flood of output must not
    -- turn into dead rows): they are counted as dropped straight away.
    v_skip := greatest(v_n - greatest(p_keep, 1), 0);
    INSERT INTO job_log_state AS s (job_id, total, dropped) VALUES (p_job, v_n, v_skip)
    ON CONFLICT (job_id) DO UPDATE SET total = s.total + v_n, dropped = s.dropped + v_skip
    RETURNING s.total, s.dropped, s.trimmed_id INTO v_total, v_dropped, v_trimmed;

    INSERT INTO job_logs (job_id, attempt, line, seq)
    SELECT p_job, p_attempt, u.line, v_total - v_n + u.n
      FROM unnest(p_lines) WITH ORDINALITY AS u(line, n)
     WHERE u.n > v_skip
     ORDER BY u.n;

    v_excess := v_total - v_dropped - greatest(p_keep, 1);
    IF v_excess > 0 THEN
        WITH gone AS (
            DELETE FROM job_logs l
             WHERE l.id IN (SELECT o.id FROM job_logs o
                             WHERE o.job_id = p_job AND o.id > v_trimmed
                             ORDER BY o.id LIMIT v_excess)
            RETURNING l.id
        )
        SELECT count(*), max(gone.id) INTO v_gone, v_last FROM gone;
        IF v_gone > 0 THEN
            UPDATE job_log_state s SET dropped = s.dropped + v_gone, trimmed_id = v_last
             WHERE s.job_id = p_job;
            v_dropped := v_dropped + v_gone;
        END IF;
    END IF;

    PERFORM pg_notify('whatsnext_logs', p_job::text);
    RETURN QUERY SELECT 200, v_status, NULL::text, v_n, v_dropped;
END $$;
