-- What a deleted project, task or group leaves of its jobs (jobs carry no foreign keys to them:
-- wn_jobs_parents checks new jobs once per statement). Runs before the row goes, once it is locked,
-- so jobs a concurrent submission committed meanwhile go too.
CREATE OR REPLACE FUNCTION wn_parent_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'projects' THEN
        DELETE FROM jobs WHERE project_id = OLD.id;
    ELSIF TG_TABLE_NAME = 'tasks' THEN
        DELETE FROM jobs WHERE project_id = OLD.project_id AND task_id = OLD.id;
    ELSE
        UPDATE jobs SET group_id = NULL WHERE group_id = OLD.id;
    END IF;
    RETURN OLD;
END $$;

DROP TRIGGER IF EXISTS projects_jobs ON projects;
CREATE TRIGGER projects_jobs BEFORE DELETE ON projects FOR EACH ROW EXECUTE FUNCTION wn_parent_deleted();
DROP TRIGGER IF EXISTS tasks_jobs ON tasks;
CREATE TRIGGER tasks_jobs BEFORE DELETE ON tasks FOR EACH ROW EXECUTE FUNCTION wn_parent_deleted();
DROP TRIGGER IF EXISTS job_groups_jobs ON job_groups;
CREATE TRIGGER job_groups_jobs BEFORE DELETE ON job_groups FOR EACH ROW EXECUTE FUNCTION wn_parent_deleted();
