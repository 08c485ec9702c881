-- name: task_create
INSERT INTO tasks (project_id, name, required_cpu, required_accelerators, required_tags, command,
                   shell, defaults, max_attempts, max_lost, retry_delay, timeout, inputs, outputs)
VALUES (wn_project_id(:project), :name, :required_cpu, :required_accelerators, :required_tags, :command,
        :shell, :defaults::jsonb, :max_attempts, :max_lost, :retry_delay, :timeout, :inputs, :outputs)
RETURNING id, project_id, name, required_cpu, required_accelerators, required_tags, command, shell,
          defaults, max_attempts, max_lost, retry_delay, timeout, inputs, outputs, created_at;

-- name: task_list
SELECT id, project_id, name, required_cpu, required_accelerators, required_tags, command, shell,
       defaults, max_attempts, max_lost, retry_delay, timeout, inputs, outputs, created_at
  FROM tasks WHERE project_id = wn_project_id(:project) ORDER BY id;

-- name: task_templates
-- What checking a submission needs: whether the project is strict, and each of its tasks'
-- command template, defaults and needs (one row with a NULL name when it has no task).
SELECT p.id AS project_id, p.strict_tasks, t.name, t.command, t.shell, t.defaults,
       t.required_cpu, t.required_accelerators
  FROM projects p LEFT JOIN tasks t ON t.project_id = p.id
 WHERE p.id = wn_project_id(:project)
 ORDER BY t.id;
