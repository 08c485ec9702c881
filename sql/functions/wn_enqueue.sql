-- Insert a batch of jobs. p_jobs is a JSON array of wn_job_entry objects (an entry's position in
-- the array is its batch index, which dep_idx refers to, 1-based); a NULL field takes the task's
-- value. The concurrency key and limit go as a pair: a job that gives neither takes its task's
-- pair, one that gives only one is refused by the jobs table's check. A job for an unknown task
-- creates the task with defaults, unless the project is strict.
-- A job whose task has a command template must give every placeholder the template uses (in its
-- parameters or the task's defaults).
--
-- p_claim: a claim waiting for jobs of this project on the calling server (the arguments of
-- wn_claim as a JSON object); the claim runs in this transaction, so the jobs it takes are handed
-- to it without a notification and without a transaction of its own.
--
-- Returns the new ids in batch order, the names of the tasks the batch created, and what p_claim
-- took (a JSON array of wn_claim rows, NULL without p_claim).
-- Refusals are WN422 with the field in DETAIL and what the server needs to explain them in HINT (a
-- JSON object: index, the 0-based batch index; unknown_task; or missing and command).
-- Its statements run with generic plans: each works on the batch, whatever its size, and custom
-- plans would be planned again at every call (a millisecond for a batch of a thousand).
CREATE OR REPLACE FUNCTION wn_enqueue(p_project text, p_jobs jsonb, p_actor text DEFAULT NULL,
                                      p_claim jsonb DEFAULT NULL,
                                      OUT ids bigint[], OUT created_tasks text[], OUT claimed jsonb)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_project bigint;
    v_status text;
    v_strict boolean;
    v_src wn_job_entry[];
    v_tasks text[];
    v_bad record;
    v_missing bigint;
    v_eligible integer;
    v_taken integer := 0;
    v_blocked record;
    v_summary record;
BEGIN
    SELECT p.id, p.status, p.strict_tasks INTO v_project, v_status, v_strict FROM projects p
     WHERE p.id = wn_project_id(p_project);
    IF v_status = 'ARCHIVED' THEN
        RAISE EXCEPTION 'project % is archived: it accepts no new jobs', p_project
            USING ERRCODE = 'WN409', DETAIL = 'project';
    END IF;
    v_src := ARRAY(SELECT x FROM jsonb_populate_recordset(NULL::wn_job_entry, p_jobs) x);
    v_tasks := ARRAY(SELECT DISTINCT s.task FROM unnest(v_src) s);

    IF v_strict THEN
        SELECT s.task, s.ordinality - 1 AS idx INTO v_bad
          FROM unnest(v_src) WITH ORDINALITY s
         WHERE NOT EXISTS (SELECT 1 FROM tasks t WHERE t.project_id = v_project AND t.name = s.task)
         ORDER BY s.ordinality LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'unknown task %: project is strict, create the task first', v_bad.task
                USING ERRCODE = 'WN422', DETAIL = 'task',
                      HINT = json_build_object('index', v_bad.idx, 'unknown_task', v_bad.task)::text;
        END IF;
    ELSE
        WITH made AS (
            INSERT INTO tasks (project_id, name)
            SELECT v_project, t FROM unnest(v_tasks) t
            ON CONFLICT (project_id, name) DO NOTHING
            RETURNING name
        )
        SELECT array_agg(made.name ORDER BY made.name) INTO created_tasks FROM made;
    END IF;

    IF EXISTS (SELECT 1 FROM tasks t WHERE t.project_id = v_project AND t.name = ANY (v_tasks)
                 AND cardinality(t.placeholders) > 0) THEN
        SELECT m.idx, m.missing, m.command INTO v_bad
          FROM (SELECT s.ordinality - 1 AS idx, t.command,
                       ARRAY(SELECT p FROM unnest(t.placeholders) p
                              WHERE NOT coalesce(s.parameters, '{}') ? p
                                AND NOT coalesce(t.defaults, '{}') ? p) AS missing
                  FROM unnest(v_src) WITH ORDINALITY s
                  JOIN tasks t ON t.project_id = v_project AND t.name = s.task
                 WHERE cardinality(t.placeholders) > 0) m
         WHERE cardinality(m.missing) > 0
         ORDER BY m.idx LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'a job needs parameter % of its task''s command', v_bad.missing[1]
                USING ERRCODE = 'WN422', DETAIL = 'parameters',
                      HINT = json_build_object('index', v_bad.idx, 'missing', v_bad.missing,
                                               'command', v_bad.command)::text;
        END IF;
    END IF;

    ids := ARRAY(SELECT nextval('jobs_id_seq') FROM generate_series(1, cardinality(v_src)));

    IF NOT EXISTS (SELECT 1 FROM unnest(v_src) s
                    WHERE cardinality(s.dep_ids) > 0 OR cardinality(s.dep_idx) > 0) THEN
        -- The common case: no dependencies, one insert.
        WITH ins AS (
            INSERT INTO jobs (id, project_id, task_id, name, parameters, priority, required_cpu,
                              required_accelerators, required_tags, max_attempts, max_lost,
                              retry_delay, timeout, inputs, outputs, eligible_at, group_id, created_by,
                              concurrency_key, concurrency_limit, max_preempted)
            SELECT ids[s.ordinality], v_project, t.id, s.name, coalesce(s.parameters, '{}'),
                   coalesce(s.priority, 0), coalesce(s.required_cpu, t.required_cpu),
                   coalesce(s.required_accelerators, t.required_accelerators),
                   coalesce(s.required_tags, t.required_tags), coalesce(s.max_attempts, t.max_attempts),
                   coalesce(s.max_lost, t.max_lost),
                   coalesce(s.retry_delay, t.retry_delay), coalesce(s.timeout, t.timeout),
                   coalesce(s.inputs, t.inputs), coalesce(s.outputs, t.outputs), now(), s.group_id,
                   p_actor,
                   CASE WHEN s.concurrency_key IS NULL AND s.concurrency_limit IS NULL
                        THEN t.concurrency_key ELSE s.concurrency_key END,
                   CASE WHEN s.concurrency_key IS NULL AND s.concurrency_limit IS NULL
                        THEN t.concurrency_limit ELSE s.concurrency_limit END,
                   coalesce(s.max_preempted, t.max_preempted)
              FROM unnest(v_src) WITH ORDINALITY s JOIN tasks t ON t.project_id = v_project AND t.name = s.task
            RETURNING required_cpu, required_accelerators, required_tags
        )
        SELECT count(*) AS n, min(required_cpu) AS cpu, min(required_accelerators) AS gpus,
               CASE WHEN min(required_tags) = max(required_tags) THEN min(required_tags) END AS tags
          INTO v_summary FROM ins;
        claimed := wn_enqueue_claim(v_project, p_claim);
        v_taken := coalesce(jsonb_array_length(claimed), 0);
        IF v_summary.n > v_taken THEN
            PERFORM wn_notify_jobs(v_project, v_summary.n::integer - v_taken, 'n' || ids[1], v_summary.cpu,
                                   v_summary.gpus, v_summary.tags);
        END IF;
        RETURN;
    END IF;

    -- Dependencies on existing jobs: they must exist in this project; lock them so that a
    -- completion cannot slip between counting and inserting.
    SELECT d INTO v_missing FROM unnest(v_src) s, unnest(s.dep_ids) d
     WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = d AND j.project_id = v_project)
     LIMIT 1;
    IF v_missing IS NOT NULL THEN
        RAISE EXCEPTION 'unknown dependency: job % does not exist in project %', v_missing, p_project
            USING ERRCODE = 'WN422', DETAIL = 'depends';
    END IF;
    PERFORM 1 FROM jobs WHERE id IN (SELECT unnest(s.dep_ids) FROM unnest(v_src) s) ORDER BY id FOR SHARE;

    WITH ins AS (
        INSERT INTO jobs (id, project_id, task_id, name, parameters, priority, status, unmet_deps,
                          required_cpu, required_accelerators, required_tags, max_attempts, max_lost,
                          retry_delay, timeout, blocked_by, error, inputs, outputs, group_id, created_by,
                          concurrency_key, concurrency_limit, max_preempted)
        SELECT ids[s.ordinality], v_project, t.id, s.name, coalesce(s.parameters, '{}'),
               coalesce(s.priority, 0),
               CASE WHEN bad.id IS NULL THEN 'PENDING' ELSE 'BLOCKED' END,
               coalesce(cardinality(s.dep_idx), 0)
                 + CASE WHEN cardinality(s.dep_ids) > 0
                        THEN (SELECT count(*) FROM jobs d
                               WHERE d.id = ANY (s.dep_ids) AND d.status <> 'COMPLETED')
                        ELSE 0 END,
               coalesce(s.required_cpu, t.required_cpu),
               coalesce(s.required_accelerators, t.required_accelerators),
               coalesce(s.required_tags, t.required_tags),
               coalesce(s.max_attempts, t.max_attempts),
               coalesce(s.max_lost, t.max_lost),
               coalesce(s.retry_delay, t.retry_delay),
               coalesce(s.timeout, t.timeout),
               bad.id,
               CASE WHEN bad.id IS NULL THEN NULL
                    ELSE format('dependency %s (%s) is %s', bad.id, bad.name, lower(bad.status)) END,
               coalesce(s.inputs, t.inputs), coalesce(s.outputs, t.outputs), s.group_id, p_actor,
               CASE WHEN s.concurrency_key IS NULL AND s.concurrency_limit IS NULL
                    THEN t.concurrency_key ELSE s.concurrency_key END,
               CASE WHEN s.concurrency_key IS NULL AND s.concurrency_limit IS NULL
                    THEN t.concurrency_limit ELSE s.concurrency_limit END,
               coalesce(s.max_preempted, t.max_preempted)
        FROM unnest(v_src) WITH ORDINALITY s
        JOIN tasks t ON t.project_id = v_project AND t.name = s.task
        LEFT JOIN LATERAL (
            SELECT d.id, d.name, d.status FROM jobs d
             WHERE cardinality(s.dep_ids) > 0 AND d.id = ANY (s.dep_ids)
               AND d.status IN ('FAILED', 'CANCELLED', 'BLOCKED')
             LIMIT 1) bad ON true
        RETURNING id, project_id, status, unmet_deps, error
    ), ev AS (
        -- Created behind a failed or cancelled dependency: blocked from the start, and the history
        -- says why (creation itself is on the job's row).
        INSERT INTO job_events (job_id, project_id, status, reason, actor)
        SELECT id, project_id, status, error, p_actor FROM ins WHERE status = 'BLOCKED'
    )
    SELECT count(*) FILTER (WHERE status = 'PENDING' AND unmet_deps = 0) INTO v_eligible FROM ins;
    UPDATE jobs SET eligible_at = now()
     WHERE id = ANY (ids) AND status = 'PENDING' AND unmet_deps = 0;

    INSERT INTO job_dependencies (job_id, depends_on)
    SELECT ids[s.ordinality], d FROM unnest(v_src) WITH ORDINALITY s, unnest(s.dep_ids) d
    UNION
    SELECT ids[s.ordinality], ids[i] FROM unnest(v_src) WITH ORDINALITY s, unnest(s.dep_idx) i;

    -- A batch entry that depends on a blocked entry of the same batch is blocked too.
    FOR v_blocked IN SELECT j.id, j.error FROM jobs j WHERE j.id = ANY (ids) AND j.status = 'BLOCKED' LOOP
        PERFORM wn_block_downstream(v_blocked.id, v_blocked.error, p_actor);
    END LOOP;

    IF v_eligible > 0 THEN
        claimed := wn_enqueue_claim(v_project, p_claim);
    END IF;
    -- Dependencies locked above that are themselves eligible were invisible to concurrent
    -- claims (SKIP LOCKED): announce them too (wn_notify_eligible counts what is still pending).
    IF v_eligible > 0 OR EXISTS (SELECT 1 FROM unnest(v_src) s WHERE cardinality(s.dep_ids) > 0) THEN
        PERFORM wn_notify_eligible(v_project,
            ids || ARRAY(SELECT DISTINCT unnest(s.dep_ids) FROM unnest(v_src) s), 'n' || ids[1]);
    END IF;
END $$;
