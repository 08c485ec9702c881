-- name: schedule_list
-- A project's schedules by name (:schedule, a name or id: that one only; NULL: all), each with its
-- last job's status (NULL: no job yet, or the job was removed) and its next tick (NULL: paused).
SELECT s.id, s.project_id, p.name AS project, s.name, s.cron, s.every, s.timezone, s.job, s.overlap,
       s.paused, CASE WHEN s.paused THEN NULL ELSE s.next_run_at END AS next_run_at, s.last_run_at,
       s.last_job_id, j.status AS last_job_status, s.runs, s.skipped, s.last_skipped_at, s.last_error,
       s.last_error_at, s.created_by, s.created_at, s.updated_at
  FROM schedules s
  JOIN projects p ON p.id = s.project_id
  LEFT JOIN jobs j ON j.id = s.last_job_id
 WHERE s.project_id = wn_project_id(:project)
   AND (:schedule::text IS NULL OR s.name = :schedule OR s.id::text = :schedule)
 ORDER BY s.name;

-- name: schedule_timing
-- What a change of one schedule starts from: its timing, its next tick and whether it is paused
-- (no row: the project has no such schedule).
SELECT s.id, s.name, s.cron, s.every, s.timezone, s.next_run_at, s.paused
  FROM schedules s
 WHERE s.project_id = wn_project_id(:project) AND (s.name = :schedule OR s.id::text = :schedule);

-- name: schedule_create
-- A new schedule's id (no row: the project has one of that name). The servers' tick loops hear of
-- it (whatsnext_schedules) and wait for its first tick.
WITH s AS (
    INSERT INTO schedules (project_id, name, cron, every, timezone, job, overlap, paused, next_run_at,
                           created_by)
    VALUES (wn_project_id(:project), :name, :cron, :every, :timezone, :job::jsonb, :overlap, :paused,
            :next_run_at, :actor)
    ON CONFLICT (project_id, name) DO NOTHING
    RETURNING id
)
SELECT s.id FROM s CROSS JOIN LATERAL (SELECT pg_notify('whatsnext_schedules', '')) n;

-- name: schedule_update
-- Change schedule :id: :timing says whether :cron and :every are its new timing (one of them is
-- NULL); every other field NULL keeps what it was, :next_run_at included. Its id (no row: no such
-- schedule); the tick loops hear of it.
WITH s AS (
    UPDATE schedules
       SET cron = CASE WHEN :timing THEN :cron::text ELSE cron END,
           every = CASE WHEN :timing THEN :every::integer ELSE every END,
           timezone = coalesce(:timezone, timezone),
           job = coalesce(:job::jsonb, job),
           overlap = coalesce(:overlap, overlap),
           paused = coalesce(:paused, paused),
           next_run_at = coalesce(:next_run_at, next_run_at),
           updated_at = now()
     WHERE id = :id
    RETURNING id
)
SELECT s.id FROM s CROSS JOIN LATERAL (SELECT pg_notify('whatsnext_schedules', '')) n;

-- name: schedule_delete
-- Remove schedule :id (its jobs stay, no longer linked to it); how many rows went (0 or 1).
WITH s AS (DELETE FROM schedules WHERE id = :id RETURNING id)
SELECT count(*) FROM s;

-- name: schedule_try
-- Queue the job of a schedule as a tick would (wn_enqueue), for the caller to roll back: what the
-- project refuses (a strict project's unknown task, a parameter the task's command needs) is
-- refused when the schedule is made, not at its first tick.
SELECT e.ids FROM wn_enqueue(:project, :jobs::jsonb, :actor, NULL) e;

-- name: schedule_due
-- The due schedules that no other server holds, earliest first, locked until the caller's
-- transaction ends (each tick is taken by one server), with the transaction's time (the following
-- tick is the first after it).
SELECT s.id, s.project_id, s.name, s.cron, s.every, s.timezone, s.job, s.next_run_at, s.created_by,
       now() AS now
  FROM schedules s
 WHERE NOT s.paused AND s.next_run_at <= now()
 ORDER BY s.next_run_at
 LIMIT :limit
   FOR UPDATE SKIP LOCKED;

-- name: schedule_fire
-- One tick of a due schedule the caller locked (see wn_schedule_fire): its outcome and job.
SELECT outcome, job_id FROM wn_schedule_fire(:schedule_id, :tick, :next_run_at, :jobs::jsonb, :actor);

-- name: schedule_failed
-- A tick that could not submit its job: the schedule moves on to :next_run_at and says why.
UPDATE schedules SET next_run_at = :next_run_at, last_error = :error, last_error_at = now()
 WHERE id = :schedule_id;

-- name: schedule_next
-- Seconds until the earliest tick of any schedule (0 or less: one is due; NULL: none).
SELECT extract(epoch FROM min(next_run_at) - clock_timestamp())::float8 FROM schedules WHERE NOT paused;

