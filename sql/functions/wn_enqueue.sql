-- Insert a batch of jobs. p_jobs is a JSON array of wn_job_entry objects (an entry's position in
-- the array is its batch index, which dep_idx refers to, 1-based); a NULL field takes the task's
-- value. A job for an unknown task creates the task with defaults. Returns the new ids in batch order.
CREATE OR REPLACE FUNCTION wn_enqueue(p_project text, p_jobs jsonb, p_actor text DEFAULT NULL)
RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    v_project bigint;
    v_status text;
    v_src wn_job_entry[];
    v_ids bigint[];
    v_missing bigint;
    v_eligible integer;
    v_blocked record;
    v_summary record;
BEGIN
    SELECT id, status INTO v_project, v_status FROM projects
     WHERE id = wn_project_id(p_project);
    IF v_status = 'ARCHIVED' THEN
        RAISE EXCEPTION 'project % is archived: it accepts no new jobs', p_project
            USING ERRCODE = 'WN409', DETAIL = 'project';
    END IF;
    v_src := ARRAY(SELECT x FROM jsonb_populate_recordset(NULL::wn_job_entry, p_jobs) x);
    v_ids := ARRAY(SELECT nextval('jobs_id_seq') FROM generate_series(1, cardinality(v_src)));

    INSERT INTO tasks (project_id, name)
    SELECT DISTINCT v_project, s.task FROM unnest(v_src) s
    ON CONFLICT (project_id, name) DO NOTHING;

    IF NOT EXISTS (SELECT 1 FROM unnest(v_src) s
                    WHERE cardinality(s.dep_ids) > 0 OR cardinality(s.dep_idx) > 0) THEN
        -- The common case: no dependencies, one insert.
        WITH ins AS (
            INSERT INTO jobs (id, project_id, task_id, name, parameters, priority, required_cpu,
                              required_accelerators, required_tags, max_attempts, max_lost,
                              retry_delay, timeout, inputs, outputs, eligible_at, group_id)
            SELECT v_ids[s.ordinality], v_project, t.id, s.name, coalesce(s.parameters, '{}'),
                   coalesce(s.priority, 0), coalesce(s.required_cpu, t.required_cpu),
                   coalesce(s.required_accelerators, t.required_accelerators),
                   coalesce(s.required_tags, t.required_tags), coalesce(s.max_attempts, t.max_attempts),
                   coalesce(s.max_lost, t.max_lost),
                   coalesce(s.retry_delay, t.retry_delay), coalesce(s.timeout, t.timeout),
                   coalesce(s.inputs, t.inputs), coalesce(s.outputs, t.outputs), now(), s.group_id
              FROM unnest(v_src) WITH ORDINALITY s JOIN tasks t ON t.project_id = v_project AND t.name = s.task
            RETURNING id, required_cpu, required_accelerators, required_tags
        ), ev AS (
            INSERT INTO job_events (job_id, project_id, status, reason, actor)
            SELECT id, v_project, 'PENDING', 'created', p_actor FROM ins
        )
        SELECT count(*) AS n, min(required_cpu) AS cpu, min(required_accelerators) AS gpus,
               CASE WHEN min(required_tags) = max(required_tags) THEN min(required_tags) END AS tags
          INTO v_summary FROM ins;
        PERFORM wn_notify_jobs(v_project, v_summary.n::integer, 'n' || v_ids[1], v_summary.cpu,
                               v_summary.gpus, v_summary.tags);
        RETURN v_ids;
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
                          retry_delay, timeout, blocked_by, error, inputs, outputs, group_id)
        SELECT v_ids[s.ordinality], v_project, t.id, s.name, coalesce(s.parameters, '{}'),
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
               coalesce(s.inputs, t.inputs), coalesce(s.outputs, t.outputs), s.group_id
        FROM unnest(v_src) WITH ORDINALITY s
        JOIN tasks t ON t.project_id = v_project AND t.name = s.task
        LEFT JOIN LATERAL (
            SELECT d.id, d.name, d.status FROM jobs d
             WHERE cardinality(s.dep_ids) > 0 AND d.id = ANY (s.dep_ids)
               AND d.status IN ('FAILED', 'CANCELLED', 'BLOCKED')
             LIMIT 1) bad ON true
        RETURNING id, status, unmet_deps
    ), ev AS (
        INSERT INTO job_events (job_id, project_id, status, reason, actor)
        SELECT id, v_project, status, 'created', p_actor FROM ins
    )
    SELECT count(*) FILTER (WHERE status = 'PENDING' AND unmet_deps = 0) INTO v_eligible FROM ins;
    UPDATE jobs SET eligible_at = now()
     WHERE id = ANY (v_ids) AND status = 'PENDING' AND unmet_deps = 0;

    INSERT INTO job_dependencies (job_id, depends_on)
    SELECT v_ids[s.ordinality], d FROM unnest(v_src) WITH ORDINALITY s, unnest(s.dep_ids) d
    UNION
    SELECT v_ids[s.ordinality], v_ids[i] FROM unnest(v_src) WITH ORDINALITY s, unnest(s.dep_idx) i;

    -- A batch entry that depends on a blocked entry of the same batch is blocked too.
    FOR v_blocked IN SELECT j.id, j.error FROM jobs j WHERE j.id = ANY (v_ids) AND j.status = 'BLOCKED' LOOP
        PERFORM wn_block_downstream(v_blocked.id, v_blocked.error, p_actor);
    END LOOP;

    -- Dependencies locked above that are themselves eligible were invisible to concurrent
    -- claims (SKIP LOCKED): announce them too.
    IF v_eligible > 0 OR EXISTS (SELECT 1 FROM unnest(v_src) s WHERE cardinality(s.dep_ids) > 0) THEN
        PERFORM wn_notify_eligible(v_project,
            v_ids || ARRAY(SELECT DISTINCT unnest(s.dep_ids) FROM unnest(v_src) s), 'n' || v_ids[1]);
    END IF;
    RETURN v_ids;
END $$;
