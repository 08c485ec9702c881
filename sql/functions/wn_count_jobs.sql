-- Keeps job_counts (see migration 0018): after each statement that inserts, updates or deletes
-- jobs, one row per project and status it changed, with the difference (an update that leaves
-- every status as it was, a heartbeat's, adds none). A TRUNCATE of jobs empties it.
-- About one statement in 256 also folds the rows into one per project and status (under a lock
-- that others skip, never wait for; in READ COMMITTED only, where its DELETE sees what committed
-- last): rows another transaction has not committed yet stay as they are, so no count is lost.
CREATE OR REPLACE FUNCTION wn_count_jobs() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO job_counts (project_id, status, n)
        SELECT project_id, status, count(*) FROM new_jobs GROUP BY project_id, status;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO job_counts (project_id, status, n)
        SELECT c.project_id, c.status, sum(c.n)
          FROM (SELECT project_id, status, 1 AS n FROM new_jobs
                UNION ALL
                SELECT project_id, status, -1 FROM old_jobs) c
         GROUP BY c.project_id, c.status
        HAVING sum(c.n) <> 0;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO job_counts (project_id, status, n)
        SELECT project_id, status, -count(*) FROM old_jobs GROUP BY project_id, status;
    ELSE
        DELETE FROM job_counts;
        RETURN NULL;
    END IF;
    IF random() < 1.0 / 256 AND current_setting('transaction_isolation') = 'read committed'
       AND pg_try_advisory_xact_lock(hashtext('whatsnext.job_counts')) THEN
        WITH gone AS (DELETE FROM job_counts RETURNING project_id, status, n)
        INSERT INTO job_counts (project_id, status, n)
        SELECT project_id, status, sum(n) FROM gone GROUP BY project_id, status HAVING sum(n) <> 0;
    END IF;
    RETURN NULL;
END $$;

-- Transition tables allow one event per trigger (and no column list), hence four triggers.
DROP TRIGGER IF EXISTS jobs_count_insert ON jobs;
CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs REFERENCING NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION wn_count_jobs();
DROP TRIGGER IF EXISTS jobs_count_update ON jobs;
CREATE TRIGGER jobs_count_update AFTER UPDATE ON jobs REFERENCING OLD TABLE AS old_jobs NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION wn_count_jobs();
DROP TRIGGER IF EXISTS jobs_count_delete ON jobs;
CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs REFERENCING OLD TABLE AS old_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION wn_count_jobs();
DROP TRIGGER IF EXISTS jobs_count_truncate ON jobs;
CREATE TRIGGER jobs_count_truncate AFTER TRUNCATE ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION wn_count_jobs();
