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
-- Dependencies: dep_ids (existing jobs), dep_idx (1-based batch indexes) and dep_groups (every
-- job a named group has when this batch is inserted, its own entries included, the job itself
-- excluded), each with its condition (dep_ids_on, dep_idx_on, dep_groups_on: success by default;
-- see wn_settle_downstream, which decides at once whether each new job waits, is eligible or is
-- BLOCKED). One upstream named twice keeps the first condition given (ids, then batch, then groups).
--
-- unique_key: an entry whose key a job of the project already has is that job (nothing is inserted
-- for it, its id is returned and its index listed in `existing`) when the fields it gives match
-- the job's; else WN409 naming them. Keys are locked (advisory, by bucket, in order) so that
-- concurrent submissions of one key make one job.
--
-- not_before / delay: the job is not handed out before then (available_at), and its wait counts
-- from then (eligible_at).
--
-- warnings: a parameter that no placeholder of its task's command (or of the job's input and output
-- templates) uses, as [{index, field, message}]; a project with strict_parameters refuses it.
--
-- Returns the ids in batch order, the names of the tasks the batch created, what p_claim took (a
-- JSON array of wn_claim rows, NULL without p_claim), the 0-based indexes of the entries that were
-- already there, and the warnings (NULL when none).
-- Refusals are WN422 (WN409 for a unique key) with the field in DETAIL and what the server needs to
-- explain them in HINT (a JSON object: index, the 0-based batch index; unknown_task; missing and
-- command; unused; unknown_group or empty_group; id and fields).
-- Its statements run with generic plans: each works on the batch, whatever its size, and custom
-- plans would be planned again at every call (a millisecond for a batch of a thousand).
CREATE OR REPLACE FUNCTION wn_enqueue(p_project text, p_jobs jsonb, p_actor text DEFAULT NULL,
                                      p_claim jsonb DEFAULT NULL,
                                      OUT ids bigint[], OUT created_tasks text[], OUT claimed jsonb,
                                      OUT existing integer[], OUT warnings jsonb)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_project bigint;
    v_status text;
    v_strict boolean;
    v_strict_params boolean;
    v_old bigint[];
    v_deps boolean;
    v_src wn_job_entry[];
    v_tasks text[];
    v_bad record;
    v_unused text[];
    v_missing bigint;
    v_eligible integer;
    v_taken integer := 0;
    v_ups bigint[];
    v_summary record;
BEGIN
    existing := '{}';
    SELECT p.id, p.status, p.strict_tasks, p.strict_parameters
      INTO v_project, v_status, v_strict, v_strict_params FROM projects p
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

    -- Parameters no placeholder uses: a warning, or in a strict-parameters project a refusal.
    IF EXISTS (SELECT 1 FROM tasks t WHERE t.project_id = v_project AND t.name = ANY (v_tasks)
                 AND t.command IS NOT NULL) THEN
        WITH unused AS (
            SELECT s.ordinality - 1 AS idx, k.key AS name, t.name AS task, t.placeholders
              FROM unnest(v_src) WITH ORDINALITY s
              JOIN tasks t ON t.project_id = v_project AND t.name = s.task AND t.command IS NOT NULL
             CROSS JOIN LATERAL jsonb_object_keys(coalesce(s.parameters, '{}')) AS k(key)
             WHERE NOT k.key = ANY (coalesce(t.placeholders, '{}'))
               AND NOT EXISTS (
                   SELECT 1 FROM unnest(coalesce(s.inputs, t.inputs) || coalesce(s.outputs, t.outputs)) path
                    WHERE path LIKE '%{' || k.key || '}%' OR path LIKE '%{' || k.key || ':%'
                       OR path LIKE '%{' || k.key || '!%')
        )
        SELECT jsonb_agg(jsonb_build_object(
                   'index', u.idx, 'field', 'parameters.' || u.name,
                   'message', format('parameter %s is not used by task %s (its command uses: %s)',
                                     u.name, u.task,
                                     coalesce(nullif(array_to_string(u.placeholders, ', '), ''), 'none')))
                   ORDER BY u.idx, u.name)
          INTO warnings FROM unused u;
        IF warnings IS NOT NULL AND v_strict_params THEN
            -- Refused: the first entry with unused parameters, naming them all.
            v_unused := ARRAY(SELECT substr(w->>'field', length('parameters.') + 1)
                                FROM jsonb_array_elements(warnings) w
                               WHERE w->'index' = warnings->0->'index');
            RAISE EXCEPTION 'parameter % is not used by the task''s command (the project refuses unused parameters)',
                  v_unused[1]
                USING ERRCODE = 'WN422', DETAIL = 'parameters',
                      HINT = json_build_object('index', warnings->0->'index', 'unused', v_unused)::text;
        END IF;
    END IF;

    -- Unique keys: the entries whose key a job already has are that job, when they agree with it.
    IF EXISTS (SELECT 1 FROM unnest(v_src) s WHERE s.unique_key IS NOT NULL) THEN
        -- One lock per bucket of keys (at most 256 per batch, in order: no deadlock, and a large
        -- keyed batch cannot fill the lock table); two submissions of one key wait for each other.
        PERFORM pg_advisory_xact_lock(hashtext('whatsnext.unique_key/' || v_project), k.bucket)
           FROM (SELECT DISTINCT hashtext(s.unique_key) & 255 AS bucket FROM unnest(v_src) s
                  WHERE s.unique_key IS NOT NULL ORDER BY 1) k;
        v_old := ARRAY(SELECT (SELECT j.id FROM jobs j
                                WHERE j.project_id = v_project AND j.unique_key = s.unique_key)
                         FROM unnest(v_src) WITH ORDINALITY s ORDER BY s.ordinality);
        SELECT m.idx, m.id, m.fields INTO v_bad
          FROM (SELECT s.ordinality - 1 AS idx, j.id,
                       array_remove(ARRAY[
                           CASE WHEN s.name IS DISTINCT FROM j.name THEN 'name' END,
                           CASE WHEN s.task IS DISTINCT FROM t.name THEN 'task' END,
                           CASE WHEN coalesce(s.parameters, '{}') <> j.parameters THEN 'parameters' END,
                           CASE WHEN coalesce(s.priority, 0) <> j.priority THEN 'priority' END,
                           CASE WHEN s.required_cpu <> j.required_cpu THEN 'required_cpu' END,
                           CASE WHEN s.required_accelerators <> j.required_accelerators THEN 'required_accelerators' END,
                           CASE WHEN s.required_tags <> j.required_tags THEN 'required_tags' END,
                           CASE WHEN s.max_attempts <> j.max_attempts THEN 'max_attempts' END,
                           CASE WHEN s.max_lost <> j.max_lost THEN 'max_lost' END,
                           CASE WHEN s.retry_delay <> j.retry_delay THEN 'retry_delay' END,
                           CASE WHEN s.timeout <> j.timeout THEN 'timeout' END,
                           CASE WHEN s.inputs <> j.inputs THEN 'inputs' END,
                           CASE WHEN s.outputs <> j.outputs THEN 'outputs' END,
                           CASE WHEN s.group_id IS NOT NULL AND s.group_id IS DISTINCT FROM j.group_id THEN 'group' END,
                           CASE WHEN s.concurrency_key IS NOT NULL AND s.concurrency_key IS DISTINCT FROM j.concurrency_key
                                THEN 'concurrency_key' END,
                           CASE WHEN s.concurrency_limit IS NOT NULL AND s.concurrency_limit IS DISTINCT FROM j.concurrency_limit
                                THEN 'concurrency_limit' END,
                           CASE WHEN s.max_preempted <> j.max_preempted THEN 'max_preempted' END
                       ], NULL) AS fields
                  FROM unnest(v_src) WITH ORDINALITY s
                  CROSS JOIN LATERAL (SELECT * FROM jobs j WHERE j.id = v_old[s.ordinality] OFFSET 0) j
                  JOIN tasks t ON t.id = j.task_id) m
         WHERE cardinality(m.fields) > 0
         ORDER BY m.idx LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'unique key of job % is taken by job % with other %', v_bad.idx, v_bad.id,
                  array_to_string(v_bad.fields, ', ')
                USING ERRCODE = 'WN409', DETAIL = 'unique_key',
                      HINT = json_build_object('index', v_bad.idx, 'id', v_bad.id, 'fields', v_bad.fields)::text;
        END IF;
        existing := ARRAY(SELECT o.n - 1 FROM unnest(v_old) WITH ORDINALITY o(id, n)
                           WHERE o.id IS NOT NULL ORDER BY o.n);
    END IF;

    ids := ARRAY(SELECT CASE WHEN v_old[g] IS NULL THEN nextval('jobs_id_seq') ELSE v_old[g] END
                   FROM generate_series(1, cardinality(v_src)) g);
    IF cardinality(existing) = cardinality(v_src) THEN
        RETURN;  -- every job was there already
    END IF;
    v_deps := EXISTS (SELECT 1 FROM unnest(v_src) s
                       WHERE cardinality(s.dep_ids) > 0 OR cardinality(s.dep_idx) > 0
                          OR cardinality(s.dep_groups) > 0);

    IF v_deps THEN
        -- Dependencies on existing jobs: they must exist in this project; named groups must exist.
        SELECT d INTO v_missing FROM unnest(v_src) WITH ORDINALITY s, unnest(s.dep_ids) d
         WHERE v_old[s.ordinality] IS NULL
           AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = d AND j.project_id = v_project)
         LIMIT 1;
        IF v_missing IS NOT NULL THEN
            RAISE EXCEPTION 'unknown dependency: job % does not exist in project %', v_missing, p_project
                USING ERRCODE = 'WN422', DETAIL = 'depends';
        END IF;
        SELECT s.ordinality - 1 AS idx, g.name INTO v_bad
          FROM unnest(v_src) WITH ORDINALITY s, unnest(s.dep_groups) g(name)
         WHERE v_old[s.ordinality] IS NULL
           AND NOT EXISTS (SELECT 1 FROM job_groups jg WHERE jg.project_id = v_project AND jg.name = g.name)
         ORDER BY s.ordinality LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'unknown group %: no job of project % is in it', v_bad.name, p_project
                USING ERRCODE = 'WN422', DETAIL = 'depends',
                      HINT = json_build_object('index', v_bad.idx, 'unknown_group', v_bad.name)::text;
        END IF;
    END IF;

    -- One insert. A job with dependencies starts PENDING and not eligible (wn_settle_downstream
    -- decides below); the others are eligible from their start (now, or not_before / delay).
    WITH ins AS (
        INSERT INTO jobs (id, project_id, task_id, name, parameters, priority, unmet_deps, required_cpu,
                          required_accelerators, required_tags, max_attempts, max_lost, retry_delay,
                          timeout, inputs, outputs, available_at, eligible_at, group_id, created_by,
                          concurrency_key, concurrency_limit, max_preempted, unique_key, task_version)
        SELECT ids[s.ordinality], v_project, t.id, s.name, coalesce(s.parameters, '{}'),
               coalesce(s.priority, 0), w.waits::integer,
               coalesce(s.required_cpu, t.required_cpu),
               coalesce(s.required_accelerators, t.required_accelerators),
               coalesce(s.required_tags, t.required_tags), coalesce(s.max_attempts, t.max_attempts),
               coalesce(s.max_lost, t.max_lost),
               coalesce(s.retry_delay, t.retry_delay), coalesce(s.timeout, t.timeout),
               coalesce(s.inputs, t.inputs), coalesce(s.outputs, t.outputs),
               w.start, CASE WHEN w.waits THEN NULL ELSE w.start END,
               s.group_id, p_actor,
               CASE WHEN s.concurrency_key IS NULL AND s.concurrency_limit IS NULL
                    THEN t.concurrency_key ELSE s.concurrency_key END,
               CASE WHEN s.concurrency_key IS NULL AND s.concurrency_limit IS NULL
                    THEN t.concurrency_limit ELSE s.concurrency_limit END,
               coalesce(s.max_preempted, t.max_preempted), s.unique_key, t.version
          FROM unnest(v_src) WITH ORDINALITY s
          JOIN tasks t ON t.project_id = v_project AND t.name = s.task
         CROSS JOIN LATERAL (
               SELECT v_deps AND coalesce(cardinality(s.dep_ids) > 0 OR cardinality(s.dep_idx) > 0
                                           OR cardinality(s.dep_groups) > 0, false) AS waits,
                      coalesce(s.not_before, now() + make_interval(secs => coalesce(s.delay, 0))) AS start) w
         WHERE v_old[s.ordinality] IS NULL
        RETURNING required_cpu, required_accelerators, required_tags
    )
    SELECT count(*) AS n, min(required_cpu) AS cpu, min(required_accelerators) AS gpus,
           CASE WHEN min(required_tags) = max(required_tags) THEN min(required_tags) END AS tags
      INTO v_summary FROM ins;

    IF NOT v_deps THEN
        -- The common case: no dependencies, nothing more to decide.
        claimed := wn_enqueue_claim(v_project, p_claim);
        v_taken := coalesce(jsonb_array_length(claimed), 0);
        IF v_summary.n > v_taken THEN
            PERFORM wn_notify_jobs(v_project, v_summary.n::integer - v_taken, 'n' || ids[1], v_summary.cpu,
                                   v_summary.gpus, v_summary.tags);
        END IF;
        RETURN;
    END IF;

    -- The edges, each with its condition. A group's members are the jobs it has now, this batch's
    -- included (they were just inserted), the job itself excluded.
    INSERT INTO job_dependencies (job_id, depends_on, condition)
    SELECT DISTINCT ON (e.job_id, e.up) e.job_id, e.up, e.cond
      FROM (SELECT ids[s.ordinality] AS job_id, d.up, coalesce(s.dep_ids_on[d.n], 'success') AS cond,
                   1 AS src, d.n
              FROM unnest(v_src) WITH ORDINALITY s, unnest(s.dep_ids) WITH ORDINALITY d(up, n)
             WHERE v_old[s.ordinality] IS NULL
            UNION ALL
            SELECT ids[s.ordinality], ids[d.i], coalesce(s.dep_idx_on[d.n], 'success'), 2, d.n
              FROM unnest(v_src) WITH ORDINALITY s, unnest(s.dep_idx) WITH ORDINALITY d(i, n)
             WHERE v_old[s.ordinality] IS NULL
            UNION ALL
            SELECT ids[s.ordinality], m.id, coalesce(s.dep_groups_on[g.n], 'success'), 3, g.n
              FROM unnest(v_src) WITH ORDINALITY s, unnest(s.dep_groups) WITH ORDINALITY g(name, n)
              JOIN job_groups jg ON jg.project_id = v_project AND jg.name = g.name
              JOIN jobs m ON m.group_id = jg.id
             WHERE v_old[s.ordinality] IS NULL AND m.id <> ids[s.ordinality]) e
     ORDER BY e.job_id, e.up, e.src, e.n;

    SELECT s.ordinality - 1 AS idx, g.name INTO v_bad
      FROM unnest(v_src) WITH ORDINALITY s, unnest(s.dep_groups) g(name)
      JOIN job_groups jg ON jg.project_id = v_project AND jg.name = g.name
     WHERE v_old[s.ordinality] IS NULL
       AND NOT EXISTS (SELECT 1 FROM jobs m WHERE m.group_id = jg.id AND m.id <> ids[s.ordinality])
     ORDER BY s.ordinality LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'group % has no jobs to wait for', v_bad.name
            USING ERRCODE = 'WN422', DETAIL = 'depends',
                  HINT = json_build_object('index', v_bad.idx, 'empty_group', v_bad.name)::text;
    END IF;

    -- Lock the existing upstream jobs so that a completion cannot slip between settling and
    -- committing (it waits, then settles the new jobs itself); then decide each new job's state.
    v_ups := ARRAY(SELECT DISTINCT jd.depends_on FROM job_dependencies jd WHERE jd.job_id = ANY (ids));
    PERFORM 1 FROM jobs WHERE id = ANY (v_ups) AND NOT id = ANY (ids) ORDER BY id FOR SHARE;
    PERFORM wn_settle_downstream(v_ups, p_actor, false);

    SELECT count(*) INTO v_eligible FROM jobs j
     WHERE j.id = ANY (ids) AND j.status = 'PENDING' AND j.unmet_deps = 0
       AND NOT j.id = ANY (coalesce(v_old, '{}'));
    IF v_eligible > 0 THEN
        claimed := wn_enqueue_claim(v_project, p_claim);
    END IF;
    -- Upstream jobs locked above that are themselves eligible were invisible to concurrent claims
    -- (SKIP LOCKED): announce them too (wn_notify_eligible counts what is still pending).
    PERFORM wn_notify_eligible(v_project, ids || v_ups, 'n' || ids[1]);
END $$;
