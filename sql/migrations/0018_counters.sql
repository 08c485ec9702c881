-- Job counts by project and status, kept as jobs change (wn_count_jobs, a trigger on jobs), so
-- that a project's page, GET /projects/{p} and /metrics read a handful of rows instead of counting
-- every job a project ever had (a GROUP BY over ten million finished jobs takes seconds).
-- depends: 0014_sweeps

-- A project's count of a status is the sum of its rows here (wn_job_counts). Each statement that
-- changes jobs inserts its differences (one row per project and status, positive or negative);
-- now and then one statement folds the rows into one per project and status. Rows are inserted
-- and deleted, never updated: no two transactions wait on one counter row, and while a long
-- transaction holds back the xmin horizon no change walks a chain of dead versions of a row.
CREATE TABLE job_counts (
    project_id bigint NOT NULL,
    status     text   NOT NULL,
    n          bigint NOT NULL
);
-- Small, and every fold deletes what it reads: vacuumed after a thousand dead rows whatever its size.
ALTER TABLE job_counts SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
                            autovacuum_vacuum_insert_scale_factor = 0,
                            autovacuum_vacuum_insert_threshold = 1000);

-- The counts of the jobs already there. Writers of jobs wait until this commits.
LOCK TABLE jobs IN SHARE MODE;
INSERT INTO job_counts (project_id, status, n)
SELECT project_id, status, count(*) FROM jobs GROUP BY project_id, status;
