-- A task's settings besides what a claim reads of its version (command, defaults, shell): what
-- its jobs need, how they retry and time out, what they read and write, their concurrency pair.
-- Takes the task as JSON (to_jsonb of a tasks row, or of a row a statement returned); the history
-- of its versions keeps them (task_versions.settings).
CREATE OR REPLACE FUNCTION wn_task_settings(p_task jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(jsonb_object_agg(e.key, e.value), '{}')
      FROM jsonb_each(p_task) e
     WHERE e.key IN ('required_cpu', 'required_accelerators', 'required_tags', 'max_attempts',
                     'max_lost', 'max_preempted', 'retry_delay', 'timeout', 'inputs', 'outputs',
                     'concurrency_key', 'concurrency_limit')
$$;
