-- Change a task (by name or id, in project p_project) for the jobs submitted from now on: the
-- fields p_changes gives (JSON: a key present is a field to set, null included) replace the
-- task's, its version goes up by one and the new version is written to task_versions with its
-- actor. Jobs submitted before keep their version: the one they name is kept in task_versions
-- (written here when it is missing: a task created by a submission, or before versions). A change
-- that changes nothing returns the task as it is (same version). p_changes carries `placeholders`
-- (what the new command uses) whenever it carries `command`. p_version, when given, is the
-- version the caller checked the change against: another one is a conflict (WN409).
-- Unknown task: WN404 naming `task`; a field that cannot change: WN422 naming it.
CREATE OR REPLACE FUNCTION wn_task_update(
    p_project text, p_task text, p_changes jsonb, p_actor text, p_version integer DEFAULT NULL
) RETURNS SETOF tasks
LANGUAGE plpgsql AS $$
DECLARE
    v_old tasks;
    v_new tasks;
    v_field text;
BEGIN
    SELECT k INTO v_field FROM jsonb_object_keys(p_changes) k
     WHERE k <> ALL (ARRAY['required_cpu', 'required_accelerators', 'required_tags', 'command',
                           'placeholders', 'shell', 'defaults', 'max_attempts', 'max_lost',
                           'max_preempted', 'retry_delay', 'timeout', 'inputs', 'outputs',
                           'concurrency_key', 'concurrency_limit'])
     LIMIT 1;
    IF v_field IS NOT NULL THEN
        RAISE EXCEPTION 'a task''s % cannot be changed', v_field
            USING ERRCODE = 'WN422', DETAIL = v_field;
    END IF;
    SELECT * INTO v_old FROM tasks t
     WHERE t.project_id = wn_project_id(p_project) AND (t.name = p_task OR t.id::text = p_task)
       FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'task % not found in project %', p_task, p_project
            USING ERRCODE = 'WN404', DETAIL = 'task';
    END IF;
    IF p_version IS NOT NULL AND v_old.version <> p_version THEN
        RAISE EXCEPTION 'task % changed while this change was checked (now version %): try again',
                        v_old.name, v_old.version USING ERRCODE = 'WN409', DETAIL = 'version';
    END IF;
    v_new := jsonb_populate_record(v_old, p_changes);
    IF to_jsonb(v_new) = to_jsonb(v_old) THEN
        RETURN NEXT v_old;
        RETURN;
    END IF;

    INSERT INTO task_versions (task_id, version, command, defaults, shell, placeholders, settings,
                               created_at)
    VALUES (v_old.id, v_old.version, v_old.command, v_old.defaults, v_old.shell, v_old.placeholders,
            wn_task_settings(to_jsonb(v_old)), coalesce(v_old.updated_at, v_old.created_at))
    -- A first version copied when versions came kept no settings: they are the task's until now.
    ON CONFLICT (task_id, version) DO UPDATE SET settings = EXCLUDED.settings
     WHERE task_versions.settings = '{}';

    UPDATE tasks t
       SET required_cpu = v_new.required_cpu, required_accelerators = v_new.required_accelerators,
           required_tags = v_new.required_tags, command = v_new.command,
           placeholders = v_new.placeholders, shell = v_new.shell, defaults = v_new.defaults,
           max_attempts = v_new.max_attempts, max_lost = v_new.max_lost,
           max_preempted = v_new.max_preempted, retry_delay = v_new.retry_delay,
           timeout = v_new.timeout, inputs = v_new.inputs, outputs = v_new.outputs,
           concurrency_key = v_new.concurrency_key, concurrency_limit = v_new.concurrency_limit,
           version = v_old.version + 1, updated_at = now()
     WHERE t.id = v_old.id
    RETURNING t.* INTO v_new;

    INSERT INTO task_versions (task_id, version, command, defaults, shell, placeholders, settings,
                               actor, created_at)
    VALUES (v_new.id, v_new.version, v_new.command, v_new.defaults, v_new.shell, v_new.placeholders,
            wn_task_settings(to_jsonb(v_new)), p_actor, v_new.updated_at);
    RETURN NEXT v_new;
END $$;
