-- name: log_append
SELECT code, status, message, appended, dropped FROM wn_append_logs(:job_id, :attempt, :lines::text[], :keep);

-- name: log_append_many
SELECT id, code, status, message, appended, dropped FROM wn_append_logs_many(:batches::jsonb, :keep);

-- name: log_page
-- The job's status, how many of its oldest lines were dropped, and its retained lines after line
-- id :after (at most :limit, oldest first), all read in one snapshot. One row with NULL line columns when
-- there is no such line; no row when the job does not exist.
SELECT j.status, coalesce(s.dropped, 0) AS dropped, l.id, l.seq, l.attempt, l.line, l.at
  FROM jobs j
  LEFT JOIN job_log_state s ON s.job_id = j.id
  LEFT JOIN LATERAL (
      SELECT o.id, o.seq, o.attempt, o.line, o.at FROM job_logs o
       WHERE o.job_id = j.id AND o.id > :after
       ORDER BY o.id LIMIT :limit) l ON true
 WHERE j.id = :job_id
 ORDER BY l.id;

-- name: log_tail
-- As log_page, but the last :limit lines after line id :after (still returned oldest first).
SELECT j.status, coalesce(s.dropped, 0) AS dropped, l.id, l.seq, l.attempt, l.line, l.at
  FROM jobs j
  LEFT JOIN job_log_state s ON s.job_id = j.id
  LEFT JOIN LATERAL (
      SELECT o.id, o.seq, o.attempt, o.line, o.at FROM job_logs o
       WHERE o.job_id = j.id AND o.id > :after
       ORDER BY o.id DESC LIMIT :limit) l ON true
 WHERE j.id = :job_id
 ORDER BY l.id;

-- name: log_dead_rows
-- Removed output lines not yet vacuumed (from the statistics collector: cheap, approximate).
SELECT coalesce((SELECT n_dead_tup FROM pg_stat_user_tables
                  WHERE relid = 'job_logs'::regclass), 0) AS dead;

-- name: log_vacuum
-- Make the space of removed output lines reusable now (skipped while another vacuum runs).
VACUUM (SKIP_LOCKED) job_logs;
