-- Live logs (bounded per job, with followers woken by NOTIFY) and declared inputs/outputs.
-- depends: 0003_workers

-- Inputs and outputs a job reads and writes: paths or URIs, templates with {parameter} fields that
-- the worker renders. A job without its own lists takes its task's at enqueue time.
ALTER TABLE tasks ADD COLUMN inputs  text[] NOT NULL DEFAULT '{}',
                  ADD COLUMN outputs text[] NOT NULL DEFAULT '{}';
ALTER TABLE jobs ADD COLUMN inputs  text[] NOT NULL DEFAULT '{}',
                 ADD COLUMN outputs text[] NOT NULL DEFAULT '{}';

-- Each line's number within its job (1, 2, ... over all attempts, dropped lines included), so that
-- a reader can tell exactly how many lines it missed when the oldest ones were removed.
ALTER TABLE job_logs ADD COLUMN seq bigint;

-- One row per job that has output: appends to the same job serialise on it.
CREATE TABLE job_log_state (
    job_id     bigint PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    total      bigint NOT NULL DEFAULT 0,  -- lines ever appended: the last line's seq
    dropped    bigint NOT NULL DEFAULT 0,  -- oldest lines removed to keep the bound
    trimmed_id bigint NOT NULL DEFAULT 0   -- the largest job_logs.id removed so far
);

-- A job records one row per (direction, uri): a later attempt refreshes it.
CREATE UNIQUE INDEX artifacts_job_direction_uri ON artifacts (job_id, direction, uri);

-- Append output lines of one attempt. Lines of an attempt other than the job's current one are
-- refused (code 409), like a stale report; lines of the current attempt are taken even just after
-- the job finished, so that a worker's last batch never loses a race with its own report.
-- Keeps the job's newest p_keep lines: older ones are deleted and counted in job_log_state.dropped.
-- Followers are woken with NOTIFY whatsnext_logs, '<job_id>'.
CREATE FUNCTION wn_append_logs(p_job bigint, p_attempt integer, p_lines text[], p_keep integer)
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

    INSERT INTO job_log_state AS s (job_id, total) VALUES (p_job, v_n)
    ON CONFLICT (job_id) DO UPDATE SET total = s.total + v_n
    RETURNING s.total, s.dropped, s.trimmed_id INTO v_total, v_dropped, v_trimmed;

    INSERT INTO job_logs (job_id, attempt, line, seq)
    SELECT p_job, p_attempt, u.line, v_total - v_n + u.n
      FROM unnest(p_lines) WITH ORDINALITY AS u(line, n)
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

-- Appends for several jobs in one round trip (p_batches: JSON array of {id, attempt, lines}), in
-- the order given (a worker sends them sorted by job id, so that concurrent batches lock alike).
CREATE FUNCTION wn_append_logs_many(p_batches jsonb, p_keep integer)
RETURNS TABLE (id bigint, code integer, status text, message text, appended integer, dropped bigint)
LANGUAGE sql AS $$
    SELECT r.id, o.code, o.status, o.message, o.appended, o.dropped
      FROM jsonb_array_elements(p_batches) WITH ORDINALITY AS e(doc, ord)
     CROSS JOIN LATERAL jsonb_to_record(e.doc) AS r(id bigint, attempt integer, lines text[])
     CROSS JOIN LATERAL wn_append_logs(r.id, r.attempt, r.lines, p_keep) o
     ORDER BY e.ord;
$$;

-- Record (or refresh) a job's artifacts. p_items: JSON array of
-- {direction, uri, size, sha256, modified_at, missing}, recorded in that order; a (direction, uri)
-- given twice keeps the last entry. p_attempt, when given, must be the job's current attempt (else code 409).
CREATE FUNCTION wn_record_artifacts(p_job bigint, p_items jsonb, p_attempt integer)
RETURNS TABLE (code integer, status text, message text, recorded integer)
LANGUAGE plpgsql AS $$
DECLARE
    v_project bigint;
    v_status text;
    v_attempt integer;
    v_n integer;
BEGIN
    SELECT j.project_id, j.status, j.attempt INTO v_project, v_status, v_attempt
      FROM jobs j WHERE j.id = p_job;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 404, NULL::text, format('job %s not found', p_job), 0;
        RETURN;
    END IF;
    IF p_attempt IS NOT NULL AND v_attempt <> p_attempt THEN
        RETURN QUERY SELECT 409, v_status,
            format('stale artifacts: job %s is at attempt %s, the artifacts are for attempt %s',
                   p_job, v_attempt, p_attempt),
            0;
        RETURN;
    END IF;
    WITH items AS (
        SELECT DISTINCT ON (r.direction, r.uri) r.direction, r.uri, r.size, r.sha256, r.modified_at,
               coalesce(r.missing, false) AS missing, e.ord
          FROM jsonb_array_elements(p_items) WITH ORDINALITY AS e(doc, ord)
         CROSS JOIN LATERAL jsonb_to_record(e.doc) AS r(
                   direction text, uri text, size bigint, sha256 text, modified_at timestamptz,
                   missing boolean)
         ORDER BY r.direction, r.uri, e.ord DESC
    ), ins AS (
        INSERT INTO artifacts AS a (job_id, project_id, direction, uri, size, sha256, modified_at, missing)
        SELECT p_job, v_project, i.direction, i.uri, i.size, i.sha256, i.modified_at, i.missing
          FROM items i
         ORDER BY i.ord
        ON CONFLICT (job_id, direction, uri) DO UPDATE
           SET size = EXCLUDED.size, sha256 = EXCLUDED.sha256, modified_at = EXCLUDED.modified_at,
               missing = EXCLUDED.missing, recorded_at = now()
        RETURNING 1
    )
    SELECT count(*) INTO v_n FROM ins;
    RETURN QUERY SELECT 200, v_status, NULL::text, v_n;
END $$;
