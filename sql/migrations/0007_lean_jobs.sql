-- A job row costs less to insert, with the same guarantees:
-- * its project, task and group are checked once per INSERT statement (the trigger jobs_parents,
--   installed with the functions: wn_jobs_parents) instead of one foreign-key lookup per row, and
--   deleting a project or a task deletes its jobs first (wn_parent_deleted);
-- * its creation is recorded on the row (created_at, and created_by: who queued it) instead of a
--   history row; the history reads it from there. Earlier 'created' history rows move there too.
-- Tasks keep the placeholders of their command template: submissions are checked in the database.
-- depends: 0006_tokens

ALTER TABLE jobs DROP CONSTRAINT jobs_project_id_fkey,
                 DROP CONSTRAINT jobs_task_id_fkey,
                 DROP CONSTRAINT jobs_group_id_fkey;

ALTER TABLE jobs ADD COLUMN created_by text;
UPDATE jobs j SET created_by = e.actor
  FROM job_events e
 WHERE e.job_id = j.id AND e.reason = 'created' AND e.actor IS NOT NULL;
-- A job queued behind a failed dependency was created BLOCKED: that stays in its history as the
-- status change it is, with its reason.
UPDATE job_events e SET reason = coalesce(j.error, 'blocked')
  FROM jobs j
 WHERE e.job_id = j.id AND e.reason = 'created' AND e.status = 'BLOCKED';
DELETE FROM job_events WHERE reason = 'created' AND status = 'PENDING';

ALTER TABLE tasks ADD COLUMN placeholders text[];
