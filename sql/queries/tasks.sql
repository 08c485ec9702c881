-- name: task_create
INSERT INTO tasks (project_id, name, required_cpu, required_accelerators, required_tags, command,
                   defaults, max_attempts, retry_delay, timeout, inputs, outputs)
VALUES (wn_project_id($1), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
RETURNING id, project_id, name, required_cpu, required_accelerators, required_tags, command, defaults,
          max_attempts, retry_delay, timeout, inputs, outputs, created_at;

-- name: task_list
SELECT id, project_id, name, required_cpu, required_accelerators, required_tags, command, defaults,
       max_attempts, retry_delay, timeout, inputs, outputs, created_at
  FROM tasks WHERE project_id = wn_project_id($1) ORDER BY id;
