-- name: task_create
-- :placeholders are the parameter names its command template uses (wn_enqueue checks jobs against them).
INSERT INTO tasks (project_id, name, required_cpu, required_accelerators, required_tags, command,
                   placeholders, shell, defaults, max_attempts, max_lost, max_preempted, retry_delay,
                   timeout, inputs, outputs, concurrency_key, concurrency_limit)
VALUES (wn_project_id(:project), :name, :required_cpu, :required_accelerators, :required_tags, :command,
        :placeholders::text[], :shell, :defaults::jsonb, :max_attempts, :max_lost, :max_preempted,
        :retry_delay, :timeout, :inputs, :outputs, :concurrency_key, :concurrency_limit)
RETURNING id, project_id, name, required_cpu, required_accelerators, required_tags, command, shell,
          defaults, max_attempts, max_lost, max_preempted, retry_delay, timeout, inputs, outputs,
          concurrency_key, concurrency_limit, created_at;

-- name: task_list
SELECT id, project_id, name, required_cpu, required_accelerators, required_tags, command, shell,
       defaults, max_attempts, max_lost, max_preempted, retry_delay, timeout, inputs, outputs,
       concurrency_key, concurrency_limit, created_at
  FROM tasks WHERE project_id = wn_project_id(:project) ORDER BY id;

-- name: task_names
-- A project's task names, oldest first (for suggestions when a name looks like a typo).
SELECT t.name FROM tasks t WHERE t.project_id = wn_project_id(:project) ORDER BY t.id;
