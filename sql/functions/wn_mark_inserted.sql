-- New jobs and the claim marks (wn_lower_mark): once per statement, the first eligible job of each
-- project it inserted.
CREATE OR REPLACE FUNCTION wn_mark_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM wn_lower_mark(f.project_id, f.rank, f.id)
       FROM (SELECT DISTINCT ON (n.project_id) n.project_id, -(n.priority::bigint) AS rank, n.id
               FROM new_jobs n
              WHERE n.status = 'PENDING' AND n.unmet_deps = 0
              ORDER BY n.project_id, 2, 3) f;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS jobs_mark_insert ON jobs;
CREATE TRIGGER jobs_mark_insert AFTER INSERT ON jobs REFERENCING NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION wn_mark_inserted();
