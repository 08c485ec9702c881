-- Hand out eligible jobs that fit the worker's free capacity, highest priority first, FIFO
-- within a priority. Jobs that need more than the worker has in total are never considered.
-- Backfill: a job that fits the worker's total but not its free capacity is passed over, so
-- smaller jobs behind it may go first. Anti-starvation: once such a job has been eligible for
-- longer than p_starve seconds (and is among the first 200 in claim order), nothing behind it
-- is handed to a worker that could run it: the worker drains and takes the large job next.
-- Only the rows handed out (at most p_max_jobs candidates) are locked, so concurrent claims
-- skip nothing they could have taken. Each hand-out is a new attempt: `attempt` is the fencing
-- token every report, log line and artifact of that attempt must carry.
-- p_tasks limits the claim to jobs of those tasks (NULL: any task); p_with_command to jobs whose
-- task has a command template (a worker that runs each job with its task's template).
-- The RUNNING event names the worker (worker_id, and its name as the reason) and, as its actor,
-- p_actor: the token that claimed under --auth (a worker cannot name the actor); without a token,
-- the worker's name as before.
CREATE OR REPLACE FUNCTION wn_claim(
    p_project text, p_worker_id bigint, p_worker_name text,
    p_free_cpu integer, p_free_acc integer, p_total_cpu integer, p_total_acc integer,
    p_tags text[], p_max_jobs integer, p_lease double precision, p_starve double precision,
    p_tasks text[] DEFAULT NULL, p_with_command boolean DEFAULT false, p_actor text DEFAULT NULL
) RETURNS TABLE (
    id bigint, name text, task text, parameters jsonb, priority integer, attempt integer,
    required_cpu integer, required_accelerators integer, timeout double precision,
    max_attempts integer, max_lost integer, lease_expires_at timestamptz, inputs text[],
    outputs text[], eligible_at timestamptz, previous_external_ids text[], command text,
    defaults jsonb, shell boolean
)
LANGUAGE plpgsql AS $$
DECLARE
    v_project bigint := wn_project_id(p_project);
    v_cpu integer := p_free_cpu;
    v_acc integer := p_free_acc;
    v_picked bigint[] := '{}';
    v_task_ids bigint[];
    v_block record;
    v_passed integer := 0;
    v_passed_cpu integer;
    v_passed_gpus integer;
    r record;
BEGIN
    IF p_max_jobs <= 0 OR v_cpu < 0 OR v_acc < 0 THEN
        RETURN;
    END IF;
    IF p_tasks IS NOT NULL OR p_with_command THEN
        v_task_ids := ARRAY(SELECT t.id FROM tasks t
                             WHERE t.project_id = v_project
                               AND (p_tasks IS NULL OR t.name = ANY (p_tasks))
                               AND (NOT p_with_command OR t.command IS NOT NULL));
    END IF;
    SELECT NULL::integer AS priority, NULL::bigint AS id INTO v_block;
    IF p_free_cpu < p_total_cpu OR p_free_acc < p_total_acc THEN
    SELECT s.priority, s.id INTO v_block
      FROM (SELECT j.priority, j.id, j.required_cpu, j.required_accelerators, j.available_at
              FROM jobs j
             WHERE j.project_id = v_project AND j.status = 'PENDING' AND j.unmet_deps = 0
               AND j.available_at <= now()
               AND j.required_cpu <= p_total_cpu AND j.required_accelerators <= p_total_acc
               AND j.required_tags <@ p_tags
               AND (v_task_ids IS NULL OR j.task_id = ANY (v_task_ids))
             ORDER BY j.priority DESC, j.id
             LIMIT 200) s
     WHERE (s.required_cpu > p_free_cpu OR s.required_accelerators > p_free_acc)
       AND s.available_at < now() - make_interval(secs => p_starve)
     ORDER BY s.priority DESC, s.id
     LIMIT 1;
    END IF;
    FOR r IN
        SELECT j.id, j.required_cpu AS rc, j.required_accelerators AS ra
          FROM jobs j
         WHERE j.project_id = v_project AND j.status = 'PENDING' AND j.unmet_deps = 0
           AND j.available_at <= now()
           AND j.required_cpu <= p_free_cpu AND j.required_accelerators <= p_free_acc
           AND j.required_tags <@ p_tags
           AND (v_task_ids IS NULL OR j.task_id = ANY (v_task_ids))
           AND (v_block.id IS NULL OR j.priority > v_block.priority
                OR (j.priority = v_block.priority AND j.id < v_block.id))
         ORDER BY j.priority DESC, j.id
         LIMIT p_max_jobs
         FOR UPDATE SKIP LOCKED
    LOOP
        IF r.rc <= v_cpu AND r.ra <= v_acc THEN
            v_picked := v_picked || r.id;
            v_cpu := v_cpu - r.rc;
            v_acc := v_acc - r.ra;
        ELSE
            v_passed := v_passed + 1;
            v_passed_cpu := least(v_passed_cpu, r.rc);
            v_passed_gpus := least(v_passed_gpus, r.ra);
        END IF;
    END LOOP;
    IF v_passed > 0 THEN
        -- Rows this claim locked but left: a concurrent claim skipped them, so say (at commit,
        -- when the locks are gone) that they are there to take.
        PERFORM wn_notify_jobs(v_project, v_passed, 'c' || txid_current(), v_passed_cpu, v_passed_gpus);
    END IF;
    IF cardinality(v_picked) = 0 THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH upd AS (
        UPDATE jobs j
           SET status = 'RUNNING', attempt = j.attempt + 1, worker_id = p_worker_id,
               worker_name = p_worker_name, started_at = now(), finished_at = NULL,
               lease_expires_at = now() + make_interval(secs => p_lease), cancel_requested = false,
               last_outcome = NULL, external_id = NULL, gpus = NULL
         WHERE j.id = ANY (v_picked)
        RETURNING j.id, j.name, j.task_id, j.parameters, j.priority, j.attempt, j.required_cpu,
                  j.required_accelerators, j.timeout, j.max_attempts, j.max_lost, j.lease_expires_at,
                  j.inputs, j.outputs, j.eligible_at, j.lost_external_ids
    ), ev AS (
        INSERT INTO job_events (job_id, project_id, status, attempt, worker_id, reason, actor)
        SELECT u.id, v_project, 'RUNNING', u.attempt, p_worker_id, p_worker_name,
               coalesce(p_actor, p_worker_name)
          FROM upd u
    )
    SELECT u.id, u.name, t.name, u.parameters, u.priority, u.attempt, u.required_cpu,
           u.required_accelerators, u.timeout, u.max_attempts, u.max_lost, u.lease_expires_at,
           u.inputs, u.outputs, u.eligible_at, u.lost_external_ids, t.command, t.defaults,
           t.shell
      FROM upd u JOIN tasks t ON t.id = u.task_id
     ORDER BY u.priority DESC, u.id;
END $$;
