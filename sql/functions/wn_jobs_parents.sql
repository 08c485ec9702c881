-- Every job belongs to a task of its own project, and to a group of that project or none: checked
-- once per INSERT statement over all of its rows (a foreign key would look up each row on its own),
-- with the parents locked FOR KEY SHARE so that they cannot be deleted before the insert commits.
-- Deleting a project or a task deletes its jobs first (wn_parent_deleted).
CREATE OR REPLACE FUNCTION wn_jobs_parents() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    v_group bigint;
BEGIN
    -- One pass over the new rows; usually one task.
    FOR r IN SELECT n.task_id, n.project_id, bool_or(n.group_id IS NOT NULL) AS grouped
               FROM new_jobs n GROUP BY n.task_id, n.project_id ORDER BY n.task_id
    LOOP
        PERFORM 1 FROM tasks t WHERE t.id = r.task_id AND t.project_id = r.project_id FOR KEY SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'task % of project % does not exist', r.task_id, r.project_id
                USING ERRCODE = '23503', DETAIL = 'task';
        END IF;
        IF r.grouped THEN
            SELECT n.group_id INTO v_group
              FROM (SELECT DISTINCT j.group_id FROM new_jobs j
                     WHERE j.task_id = r.task_id AND j.group_id IS NOT NULL) n
             WHERE NOT EXISTS (SELECT 1 FROM job_groups g WHERE g.id = n.group_id AND g.project_id = r.project_id)
             LIMIT 1;
            IF FOUND THEN
                RAISE EXCEPTION 'group % of project % does not exist', v_group, r.project_id
                    USING ERRCODE = '23503', DETAIL = 'group';
            END IF;
            PERFORM 1 FROM job_groups g WHERE g.id IN (SELECT group_id FROM new_jobs) ORDER BY g.id FOR KEY SHARE;
        END IF;
    END LOOP;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS jobs_parents ON jobs;
CREATE TRIGGER jobs_parents AFTER INSERT ON jobs REFERENCING NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION wn_jobs_parents();
