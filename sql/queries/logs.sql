-- name: log_append
SELECT code, status, message, appended, dropped FROM wn_append_logs($1, $2, $3::text[], $4);

-- name: log_append_many
SELECT id, code, status, message, appended, dropped FROM wn_append_logs_many($1::jsonb, $2);

-- name: log_page
-- The job's status, how many of its oldest lines were dropped, and its retained lines after line
-- id $2 (at most $3, oldest first), all read in one snapshot. One row with NULL line columns when
-- there is no such line; no row when the job does not exist.
SELECT j.status, coalesce(s.dropped, 0) AS dropped, l.id, l.seq, l.attempt, l.line, l.at
  FROM jobs j
  LEFT JOIN job_log_state s ON s.job_id = j.id
  LEFT JOIN LATERAL (
      SELECT o.id, o.seq, o.attempt, o.line, o.at FROM job_logs o
       WHERE o.job_id = j.id AND o.id > $2
       ORDER BY o.id LIMIT $3) l ON true
 WHERE j.id = $1
 ORDER BY l.id;

-- name: log_tail
-- As log_page, but the last $3 lines after line id $2 (still returned oldest first).
SELECT j.status, coalesce(s.dropped, 0) AS dropped, l.id, l.seq, l.attempt, l.line, l.at
  FROM jobs j
  LEFT JOIN job_log_state s ON s.job_id = j.id
  LEFT JOIN LATERAL (
      SELECT o.id, o.seq, o.attempt, o.line, o.at FROM job_logs o
       WHERE o.job_id = j.id AND o.id > $2
       ORDER BY o.id DESC LIMIT $3) l ON true
 WHERE j.id = $1
 ORDER BY l.id;
