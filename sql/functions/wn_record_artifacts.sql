-- Record (or refresh) a job's artifacts. p_items: JSON array of
-- {direction, uri, size, sha256, modified_at, missing, refused, reason}, recorded in that order; a (direction, uri)
-- given twice keeps the last entry. p_attempt, when given, must be the job's current attempt (else code 409).
-- Each row records the job's current attempt; a checkpoint recorded again keeps its kind.
CREATE OR REPLACE FUNCTION wn_record_artifacts(p_job bigint, p_items jsonb, p_attempt integer)
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
               coalesce(r.missing, false) AS missing, coalesce(r.refused, false) AS refused,
               r.reason, e.ord
          FROM jsonb_array_elements(p_items) WITH ORDINALITY AS e(doc, ord)
         CROSS JOIN LATERAL jsonb_to_record(e.doc) AS r(
                   direction text, uri text, size bigint, sha256 text, modified_at timestamptz,
                   missing boolean, refused boolean, reason text)
         ORDER BY r.direction, r.uri, e.ord DESC
    ), ins AS (
        INSERT INTO artifacts AS a (job_id, project_id, direction, uri, size, sha256, modified_at, missing,
                                    refused, reason, attempt)
        SELECT p_job, v_project, i.direction, i.uri, i.size, i.sha256, i.modified_at, i.missing,
               i.refused, i.reason, v_attempt
          FROM items i
         ORDER BY i.ord
        ON CONFLICT (job_id, direction, uri) DO UPDATE
           SET size = EXCLUDED.size, sha256 = EXCLUDED.sha256, modified_at = EXCLUDED.modified_at,
               missing = EXCLUDED.missing, refused = EXCLUDED.refused, reason = EXCLUDED.reason,
               attempt = EXCLUDED.attempt, recorded_at = now()
        RETURNING 1
    )
    SELECT count(*) INTO v_n FROM ins;
    RETURN QUERY SELECT 200, v_status, NULL::text, v_n;
END $$;
