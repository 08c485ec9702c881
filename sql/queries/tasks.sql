-- name: task_create
-- :placeholders are the parameter names its command template uses (wn_enqueue checks jobs against
-- them). Its first version goes to task_versions with its :actor.
WITH t AS (
    INSERT INTO tasks (project_id, name, required_cpu, required_accelerators, required_tags,
                       command, placeholders, shell, defaults, max_attempts, max_lost,
                       max_preempted, retry_delay, timeout, inputs, outputs, concurrency_key,
                       concurrency_limit)
    VALUES (wn_project_id(:project), :name, :required_cpu, :required_accelerators, :required_tags,
            :command, :placeholders::text[], :shell, :defaults::jsonb, :max_attempts, :max_lost,
            :max_preempted, :retry_delay, :timeout, :inputs, :outputs, :concurrency_key,
            :concurrency_limit)
    RETURNING *
), v AS (
    INSERT INTO task_versions (task_id, version, command, defaults, shell, placeholders, settings,
                               actor, created_at)
    SELECT t.id, t.version, t.command, t.defaults, t.shell, t.placeholders,
           wn_task_settings(to_jsonb(t)), :actor, t.created_at
      FROM t
)
SELECT id, project_id, name, required_cpu, required_accelerators, required_tags, command, shell,
       defaults, max_attempts, max_lost, max_preempted, retry_delay, timeout, inputs, outputs,
       concurrency_key, concurrency_limit, version, created_at, updated_at
  FROM t;

-- name: task_get
-- One task of a project, by name or id (NULL when the project has none such).
SELECT id, project_id, name, required_cpu, required_accelerators, required_tags, command, shell,
       defaults, max_attempts, max_lost, max_preempted, retry_delay, timeout, inputs, outputs,
       concurrency_key, concurrency_limit, version, created_at, updated_at
  FROM tasks
 WHERE project_id = wn_project_id(:project) AND (name = :task OR id::text = :task);

-- name: task_update
-- Change a task for the jobs submitted from now on (a new version; see wn_task_update). :changes
-- is a JSON object of the fields to set; :version, when not NULL, the version they were checked
-- against.
SELECT id, project_id, name, required_cpu, required_accelerators, required_tags, command, shell,
       defaults, max_attempts, max_lost, max_preempted, retry_delay, timeout, inputs, outputs,
       concurrency_key, concurrency_limit, version, created_at, updated_at
  FROM wn_task_update(:project, :task, :changes::jsonb, :actor, :version::integer);

-- name: task_versions
-- A task's versions, oldest first: those task_versions keeps, and the current one when it keeps
-- none for it (a task never changed since a submission created it, or since versions came). No
-- row: the project has no such task.
WITH t AS (
    SELECT * FROM tasks
     WHERE project_id = wn_project_id(:project) AND (name = :task OR id::text = :task)
)
SELECT t.name AS task, v.version, v.command, v.defaults, v.shell, v.settings, v.actor,
       v.created_at
  FROM t JOIN task_versions v ON v.task_id = t.id
UNION ALL
SELECT t.name, t.version, t.command, t.defaults, t.shell, wn_task_settings(to_jsonb(t)), NULL,
       coalesce(t.updated_at, t.created_at)
  FROM t
 WHERE NOT EXISTS (SELECT 1 FROM task_versions v WHERE v.task_id = t.id AND v.version = t.version)
 ORDER BY 2;

-- name: task_list
-- A project's tasks, oldest first, each with its current version.
SELECT id, project_id, name, required_cpu, required_accelerators, required_tags, command, shell,
       defaults, max_attempts, max_lost, max_preempted, retry_delay, timeout, inputs, outputs,
       concurrency_key, concurrency_limit, version, created_at, updated_at
  FROM tasks WHERE project_id = wn_project_id(:project) ORDER BY id;

-- name: task_names
-- A project's task names, oldest first (for suggestions when a name looks like a typo).
SELECT t.name FROM tasks t WHERE t.project_id = wn_project_id(:project) ORDER BY t.id;
