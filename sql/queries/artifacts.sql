-- name: artifact_record
SELECT code, status, message, recorded FROM wn_record_artifacts(:job_id, :items::jsonb, :attempt);

-- name: artifact_list
-- A job's artifacts, inputs first; one row with NULL artifact columns when it has none, no row
-- when the job does not exist.
SELECT a.id, j.id AS job_id, a.direction, a.uri, a.size, a.sha256, a.modified_at, a.missing,
       a.refused, a.reason, a.kind, a.attempt, a.recorded_at
  FROM jobs j LEFT JOIN artifacts a ON a.job_id = j.id
 WHERE j.id = :job_id
 ORDER BY a.direction, a.id;

-- name: artifact_find
-- The jobs of a project that recorded one URI (:direction: 'in' or 'out', NULL for both), newest first.
SELECT a.id, a.job_id, j.name AS job_name, t.name AS task, j.status AS job_status, a.direction,
       a.uri, a.size, a.sha256, a.modified_at, a.missing, a.refused, a.reason, a.kind, a.attempt,
       a.recorded_at
  FROM artifacts a JOIN jobs j ON j.id = a.job_id JOIN tasks t ON t.id = j.task_id
 WHERE a.project_id = wn_project_id(:project) AND a.uri = :uri
   AND (:direction::text IS NULL OR a.direction = :direction)
 ORDER BY a.recorded_at DESC, a.id DESC
 LIMIT :limit;

-- name: artifact_recent
-- A project's most recently recorded artifacts (:direction as in artifact_find), keyset-paginated on id.
SELECT a.id, a.job_id, j.name AS job_name, t.name AS task, j.status AS job_status, a.direction,
       a.uri, a.size, a.sha256, a.modified_at, a.missing, a.refused, a.reason, a.kind, a.attempt,
       a.recorded_at
  FROM artifacts a JOIN jobs j ON j.id = a.job_id JOIN tasks t ON t.id = j.task_id
 WHERE a.project_id = wn_project_id(:project)
   AND (:direction::text IS NULL OR a.direction = :direction)
   AND (:before::bigint IS NULL OR a.id < :before)
 ORDER BY a.id DESC
 LIMIT :limit;
