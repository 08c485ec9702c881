-- Keeps claim_marks true (see migration 0019): after each statement that inserts or updates jobs,
-- a project whose mark lies after a job the statement made eligible (PENDING with every
-- dependency met: a new job, a job put back, a job whose last dependency was met, a job whose
-- priority went up) gets its mark moved back to that job, so no claim starts after it.
-- The shared lock, held until commit, keeps wn_advance_marks from moving the mark of the project
-- meanwhile; taken before the mark is read, it waits for a sweep already under way, whose new
-- mark the UPDATE then sees (a sweep's snapshot may have missed this statement's jobs).
-- An update that makes no job eligible (a claim, a heartbeat, a report) touches no mark.
CREATE OR REPLACE FUNCTION wn_mark_eligible() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_project bigint;
BEGIN
    FOR v_project IN
        SELECT DISTINCT n.project_id FROM new_jobs n WHERE n.status = 'PENDING' AND n.unmet_deps = 0
    LOOP
        PERFORM pg_advisory_xact_lock_shared(hashtext('whatsnext.claim_marks'),
                                             (v_project % 2147483647)::integer);
        UPDATE claim_marks m SET rank = f.rank, id = f.id
          FROM (SELECT -(n.priority::bigint) AS rank, n.id FROM new_jobs n
                 WHERE n.project_id = v_project AND n.status = 'PENDING' AND n.unmet_deps = 0
                 ORDER BY 1, 2 LIMIT 1) f
         WHERE m.project_id = v_project AND (m.rank, m.id) > (f.rank, f.id);
    END LOOP;
    RETURN NULL;
END $$;

-- Transition tables allow one event per trigger, hence two triggers.
DROP TRIGGER IF EXISTS jobs_mark_insert ON jobs;
CREATE TRIGGER jobs_mark_insert AFTER INSERT ON jobs REFERENCING NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION wn_mark_eligible();
DROP TRIGGER IF EXISTS jobs_mark_update ON jobs;
CREATE TRIGGER jobs_mark_update AFTER UPDATE ON jobs REFERENCING NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION wn_mark_eligible();
