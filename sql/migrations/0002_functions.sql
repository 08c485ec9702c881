-- Queue operations as functions: each API call on the hot path is one round trip.
-- Notifications on channel whatsnext_jobs carry '<project>:<count>[:<tag>]': <count> jobs became
-- eligible (0: a job finished). PostgreSQL folds identical notifications of one transaction into
-- one, so a notification that counts jobs carries a tag (a job id) that keeps it distinct.
-- Errors are raised with SQLSTATEs of class WN, which the server maps to HTTP:
--   WN404 unknown project/job/worker, WN409 conflict (stale attempt, wrong status),
--   WN422 invalid input (unknown dependency). The DETAIL names the offending field.
-- depends: 0001_schema

-- Resolve a project by id (all digits) or by name.
CREATE FUNCTION wn_project_id(p_key text) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_id bigint;
BEGIN
    IF p_key ~ '^[0-9]{1,18}$' THEN
        SELECT id INTO v_id FROM projects WHERE id = p_key::bigint;
    ELSE
        SELECT id INTO v_id FROM projects WHERE name = p_key;
    END IF;
    IF v_id IS NULL THEN
        RAISE EXCEPTION 'project % not found', p_key USING ERRCODE = 'WN404', DETAIL = 'project';
    END IF;
    RETURN v_id;
END $$;

-- Mark every job downstream of p_root BLOCKED (transitively), naming the root in the reason.
CREATE FUNCTION wn_block_downstream(p_root bigint, p_reason text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_count integer;
BEGIN
    WITH RECURSIVE down(id) AS (
        SELECT job_id FROM job_dependencies WHERE depends_on = p_root
        UNION
        SELECT jd.job_id FROM job_dependencies jd JOIN down ON jd.depends_on = down.id
    ), upd AS (
        UPDATE jobs j SET status = 'BLOCKED', blocked_by = p_root, error = p_reason
        FROM down WHERE j.id = down.id AND j.status = 'PENDING'
        RETURNING j.id, j.project_id, j.attempt
    ), ev AS (
        INSERT INTO job_events (job_id, project_id, status, attempt, reason)
        SELECT id, project_id, 'BLOCKED', attempt, p_reason FROM upd
    )
    SELECT count(*) INTO v_count FROM upd;
    RETURN v_count;
END $$;

-- Put BLOCKED jobs downstream of p_roots back to PENDING where nothing else blocks them.
CREATE FUNCTION wn_release_downstream(p_roots bigint[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_level bigint[] := p_roots;
    v_total integer := 0;
    v_eligible integer := 0;
    v_n integer;
    v_e integer;
    v_project bigint;
    v_found bigint;
BEGIN
    LOOP
        WITH upd AS (
            UPDATE jobs j SET status = 'PENDING', blocked_by = NULL, error = NULL, available_at = now()
            WHERE j.status = 'BLOCKED'
              AND j.id IN (SELECT job_id FROM job_dependencies WHERE depends_on = ANY (v_level))
              AND NOT EXISTS (
                  SELECT 1 FROM job_dependencies jd JOIN jobs u ON u.id = jd.depends_on
                  WHERE jd.job_id = j.id AND u.status IN ('FAILED', 'CANCELLED', 'BLOCKED'))
            RETURNING j.id, j.project_id, j.attempt, j.unmet_deps
        ), ev AS (
            INSERT INTO job_events (job_id, project_id, status, attempt, reason)
            SELECT id, project_id, 'PENDING', attempt, 'released: upstream retried' FROM upd
        )
        SELECT array_agg(id), count(*), count(*) FILTER (WHERE unmet_deps = 0), min(project_id)
          INTO v_level, v_n, v_e, v_found FROM upd;
        EXIT WHEN v_n = 0;
        v_project := v_found;
        v_total := v_total + v_n;
        v_eligible := v_eligible + v_e;
    END LOOP;
    IF v_eligible > 0 THEN
        PERFORM pg_notify('whatsnext_jobs', v_project || ':' || v_eligible || ':r' || p_roots[1]);
    END IF;
    RETURN v_total;
END $$;

CREATE TYPE wn_job_input AS (
    idx integer, name text, task text, parameters jsonb, priority integer,
    required_cpu integer, required_accelerators integer, required_tags text[],
    max_attempts integer, retry_delay double precision, timeout double precision,
    dep_ids bigint[], dep_idx integer[], inputs text[], outputs text[]
);

-- Insert a batch of jobs (entries' positions in the array are their batch indexes; `idx` is
-- informative). p_jobs is a JSON array of entries:
-- {idx, name, task, parameters, priority, required_cpu, required_accelerators, required_tags,
--  max_attempts, retry_delay, timeout, dep_ids: [existing job ids], dep_idx: [1-based batch indexes],
--  inputs, outputs (NULL: the task's; the columns come with 0004_logs_artifacts)}
-- Returns the new job ids in batch order.
CREATE FUNCTION wn_enqueue(p_project text, p_jobs jsonb) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    v_project bigint;
    v_status text;
    v_src wn_job_input[];
    v_ids bigint[];
    v_missing bigint;
    v_eligible integer;
    v_blocked record;
BEGIN
    SELECT id, status INTO v_project, v_status FROM projects
     WHERE id = wn_project_id(p_project);
    IF v_status = 'ARCHIVED' THEN
        RAISE EXCEPTION 'project % is archived: it accepts no new jobs', p_project
            USING ERRCODE = 'WN409', DETAIL = 'project';
    END IF;
    -- Parse the batch once.
    v_src := ARRAY(SELECT x FROM jsonb_populate_recordset(NULL::wn_job_input, p_jobs) x);
    v_ids := ARRAY(SELECT nextval('jobs_id_seq') FROM generate_series(1, cardinality(v_src)));

    INSERT INTO tasks (project_id, name)
    SELECT DISTINCT v_project, s.task FROM unnest(v_src) s
    ON CONFLICT (project_id, name) DO NOTHING;

    IF NOT EXISTS (SELECT 1 FROM unnest(v_src) s
                    WHERE cardinality(s.dep_ids) > 0 OR cardinality(s.dep_idx) > 0) THEN
        -- The common case: no dependencies, one insert.
        WITH ins AS (
            INSERT INTO jobs (id, project_id, task_id, name, parameters, priority, required_cpu,
                              required_accelerators, required_tags, max_attempts, retry_delay,
                              timeout, inputs, outputs)
            SELECT v_ids[s.ordinality], v_project, t.id, s.name, coalesce(s.parameters, '{}'),
                   coalesce(s.priority, 0), coalesce(s.required_cpu, t.required_cpu),
                   coalesce(s.required_accelerators, t.required_accelerators),
                   coalesce(s.required_tags, t.required_tags), coalesce(s.max_attempts, t.max_attempts),
                   coalesce(s.retry_delay, t.retry_delay), coalesce(s.timeout, t.timeout),
                   coalesce(s.inputs, t.inputs), coalesce(s.outputs, t.outputs)
              FROM unnest(v_src) WITH ORDINALITY s JOIN tasks t ON t.project_id = v_project AND t.name = s.task
            RETURNING id
        ), ev AS (
            INSERT INTO job_events (job_id, project_id, status, reason)
            SELECT id, v_project, 'PENDING', 'created' FROM ins
        )
        SELECT count(*) INTO v_eligible FROM ins;
        PERFORM pg_notify('whatsnext_jobs', v_project || ':' || v_eligible);
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
                          required_cpu, required_accelerators, required_tags, max_attempts,
                          retry_delay, timeout, blocked_by, error, inputs, outputs)
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
               coalesce(s.retry_delay, t.retry_delay),
               coalesce(s.timeout, t.timeout),
               bad.id,
               CASE WHEN bad.id IS NULL THEN NULL
                    ELSE format('dependency %s (%s) is %s', bad.id, bad.name, lower(bad.status)) END,
               coalesce(s.inputs, t.inputs), coalesce(s.outputs, t.outputs)
        FROM unnest(v_src) WITH ORDINALITY s
        JOIN tasks t ON t.project_id = v_project AND t.name = s.task
        LEFT JOIN LATERAL (
            SELECT d.id, d.name, d.status FROM jobs d
             WHERE cardinality(s.dep_ids) > 0 AND d.id = ANY (s.dep_ids)
               AND d.status IN ('FAILED', 'CANCELLED', 'BLOCKED')
             LIMIT 1) bad ON true
        RETURNING id, status, unmet_deps
    ), ev AS (
        INSERT INTO job_events (job_id, project_id, status, reason)
        SELECT id, v_project, status, 'created' FROM ins
    )
    SELECT count(*) FILTER (WHERE status = 'PENDING' AND unmet_deps = 0) INTO v_eligible FROM ins;

    INSERT INTO job_dependencies (job_id, depends_on)
    SELECT v_ids[s.ordinality], d FROM unnest(v_src) WITH ORDINALITY s, unnest(s.dep_ids) d
    UNION
    SELECT v_ids[s.ordinality], v_ids[i] FROM unnest(v_src) WITH ORDINALITY s, unnest(s.dep_idx) i;

    -- A batch entry that depends on a blocked entry of the same batch is blocked too.
    FOR v_blocked IN SELECT j.id, j.error FROM jobs j WHERE j.id = ANY (v_ids) AND j.status = 'BLOCKED' LOOP
        PERFORM wn_block_downstream(v_blocked.id, v_blocked.error);
    END LOOP;

    -- Dependencies locked above that are themselves eligible were invisible to concurrent
    -- claims (SKIP LOCKED): count them in.
    v_eligible := v_eligible + (SELECT count(*) FROM jobs d
                                 WHERE d.id IN (SELECT unnest(s.dep_ids) FROM unnest(v_src) s)
                                   AND d.status = 'PENDING' AND d.unmet_deps = 0);
    IF v_eligible > 0 THEN
        PERFORM pg_notify('whatsnext_jobs', v_project || ':' || v_eligible);
    END IF;
    RETURN v_ids;
END $$;

-- Hand out eligible jobs that fit the worker's free capacity, highest priority first, FIFO
-- within a priority. Jobs that need more than the worker has in total are never considered.
-- Backfill: a job that fits the worker's total but not its free capacity is passed over, so
-- smaller jobs behind it may go first. Anti-starvation: once such a job has been eligible for
-- longer than p_starve seconds (and is among the first 200 in claim order), nothing behind it
-- is handed to a worker that could run it: the worker drains and takes the large job next.
-- Only the rows handed out (at most p_max_jobs candidates) are locked, so concurrent claims
-- skip nothing they could have taken.
CREATE FUNCTION wn_claim(
    p_project text, p_worker_id bigint, p_worker_name text,
    p_free_cpu integer, p_free_acc integer, p_total_cpu integer, p_total_acc integer,
    p_tags text[], p_max_jobs integer, p_lease double precision, p_starve double precision
) RETURNS TABLE (
    id bigint, name text, task text, parameters jsonb, priority integer, attempt integer,
    required_cpu integer, required_accelerators integer, timeout double precision,
    max_attempts integer, lease_expires_at timestamptz, inputs text[], outputs text[]
)
LANGUAGE plpgsql AS $$
DECLARE
    v_project bigint := wn_project_id(p_project);
    v_cpu integer := p_free_cpu;
    v_acc integer := p_free_acc;
    v_picked bigint[] := '{}';
    v_block record;
    v_passed integer := 0;
    r record;
BEGIN
    IF p_max_jobs <= 0 OR v_cpu < 0 OR v_acc < 0 THEN
        RETURN;
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
        END IF;
    END LOOP;
    IF v_passed > 0 THEN
        -- Rows this claim locked but left: a concurrent claim skipped them, so say (at commit,
        -- when the locks are gone) that they are there to take.
        PERFORM pg_notify('whatsnext_jobs', v_project || ':' || v_passed || ':c' || txid_current());
    END IF;
    IF cardinality(v_picked) = 0 THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH upd AS (
        UPDATE jobs j
           SET status = 'RUNNING', attempt = j.attempt + 1, worker_id = p_worker_id,
               worker_name = p_worker_name, started_at = now(), finished_at = NULL,
               lease_expires_at = now() + make_interval(secs => p_lease), cancel_requested = false
         WHERE j.id = ANY (v_picked)
        RETURNING j.id, j.name, j.task_id, j.parameters, j.priority, j.attempt, j.required_cpu,
                  j.required_accelerators, j.timeout, j.max_attempts, j.lease_expires_at,
                  j.inputs, j.outputs
    ), ev AS (
        INSERT INTO job_events (job_id, project_id, status, attempt, worker_id, reason)
        SELECT u.id, v_project, 'RUNNING', u.attempt, p_worker_id, p_worker_name FROM upd u
    )
    SELECT u.id, u.name, t.name, u.parameters, u.priority, u.attempt, u.required_cpu,
           u.required_accelerators, u.timeout, u.max_attempts, u.lease_expires_at, u.inputs, u.outputs
      FROM upd u JOIN tasks t ON t.id = u.task_id
     ORDER BY u.priority DESC, u.id;
END $$;

-- Record the outcome of one attempt. Returns (code, status): code 200 when applied, 404 for an
-- unknown job, 409 when the attempt is not the job's current running one (nothing changes).
-- p_outcome: COMPLETED, FAILED or CANCELLED; p_requeue puts the job back without using an
-- attempt (preempted).
CREATE FUNCTION wn_report_one(
    p_job bigint, p_attempt integer, p_outcome text, p_exit_code integer, p_result jsonb,
    p_error text, p_log text, p_duration double precision, p_requeue boolean
) RETURNS TABLE (code integer, status text, message text)
LANGUAGE plpgsql AS $$
DECLARE
    j jobs%ROWTYPE;
    v_new text;
    v_delay double precision;
    v_n integer;
    v_reason text;
BEGIN
    SELECT * INTO j FROM jobs WHERE jobs.id = p_job FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 404, NULL::text, format('job %s not found', p_job);
        RETURN;
    END IF;
    IF j.status <> 'RUNNING' OR j.attempt <> p_attempt THEN
        RETURN QUERY SELECT 409, j.status,
            format('stale report: job %s is %s at attempt %s, the report is for attempt %s',
                   p_job, j.status, j.attempt, p_attempt);
        RETURN;
    END IF;

    IF p_outcome = 'COMPLETED' THEN
        v_new := 'COMPLETED';
    ELSIF p_outcome = 'CANCELLED' OR j.cancel_requested THEN
        v_new := 'CANCELLED';  -- a cancel request wins over a requeue or a retry
    ELSIF p_requeue THEN
        v_new := 'PENDING';
    ELSIF j.attempt - j.attempt_base < j.max_attempts THEN
        v_new := 'PENDING';
    ELSE
        v_new := 'FAILED';
    END IF;

    IF v_new = 'PENDING' THEN
        v_delay := CASE WHEN p_requeue THEN 0
                        ELSE j.retry_delay * power(2, greatest(j.attempt - j.attempt_base - 1, 0)) END;
        UPDATE jobs SET status = 'PENDING', worker_id = NULL, lease_expires_at = NULL,
               exit_code = p_exit_code, error = p_error, log_tail = p_log, duration = p_duration,
               available_at = now() + make_interval(secs => v_delay),
               attempt_base = CASE WHEN p_requeue THEN attempt_base + 1 ELSE attempt_base END
         WHERE jobs.id = p_job;
        v_reason := CASE WHEN p_requeue THEN coalesce(p_error, 'requeued')
                         ELSE format('retry in %ss after: %s', v_delay, coalesce(p_error, 'failure')) END;
        -- Even when it waits out a delay: a woken claim learns when it becomes eligible.
        PERFORM pg_notify('whatsnext_jobs', j.project_id || ':1:' || p_job);
    ELSE
        UPDATE jobs SET status = v_new, finished_at = now(), lease_expires_at = NULL,
               exit_code = p_exit_code, result = p_result, log_tail = p_log, duration = p_duration,
               error = CASE WHEN v_new = 'COMPLETED' THEN NULL
                            WHEN v_new = 'CANCELLED' THEN coalesce(p_error, 'cancelled')
                            ELSE p_error END
         WHERE jobs.id = p_job;
        v_reason := CASE WHEN v_new = 'COMPLETED' THEN NULL ELSE coalesce(p_error, lower(v_new)) END;
    END IF;
    INSERT INTO job_events (job_id, project_id, status, attempt, worker_id, reason)
    VALUES (p_job, j.project_id, v_new, j.attempt, j.worker_id, v_reason);

    IF v_new = 'COMPLETED' THEN
        WITH dec AS (
            UPDATE jobs d
               SET unmet_deps = d.unmet_deps - 1,
                   available_at = CASE WHEN d.unmet_deps = 1 THEN now() ELSE d.available_at END
              FROM job_dependencies jd
             WHERE jd.depends_on = p_job AND d.id = jd.job_id
            RETURNING d.unmet_deps, d.status
        )
        SELECT count(*) INTO v_n FROM dec WHERE dec.unmet_deps = 0 AND dec.status = 'PENDING';
        IF v_n > 0 THEN
            PERFORM pg_notify('whatsnext_jobs', j.project_id || ':' || v_n || ':' || p_job);
        END IF;
    ELSIF v_new IN ('FAILED', 'CANCELLED') THEN
        PERFORM wn_block_downstream(p_job, format('dependency %s (%s) %s', p_job, j.name,
            CASE WHEN v_new = 'FAILED' THEN 'failed' ELSE 'was cancelled' END));
    END IF;
    IF v_new <> 'PENDING' AND coalesce(v_n, 0) = 0 THEN
        -- Count 0: nothing became eligible, but a job finished; workers deciding whether the
        -- project is done look again (one notification per transaction, however many reports).
        PERFORM pg_notify('whatsnext_jobs', j.project_id || ':0');
    END IF;
    RETURN QUERY SELECT 200, v_new, NULL::text;
END $$;

-- Several reports in one round trip (p_reports: JSON array of
-- {id, attempt, status, exit_code, result, error, log, duration, requeue}).
-- Successful completions of running jobs, the bulk of any batch, are applied set-wise: one
-- update, one history insert, one update of their dependants, one notification per project.
-- Every other report goes through wn_report_one. Results come back in input order.
CREATE FUNCTION wn_report_many(p_reports jsonb)
RETURNS TABLE (id bigint, code integer, status text, message text)
LANGUAGE plpgsql AS $$
DECLARE
    v_done bigint[];
    v_keys text[];
    v_projects bigint[];
    r record;
BEGIN
    -- Lock the completing jobs in id order (no deadlock between concurrent batches).
    PERFORM 1 FROM jobs j
     WHERE j.id IN (SELECT (e->>'id')::bigint FROM jsonb_array_elements(p_reports) e
                     WHERE e->>'status' = 'COMPLETED')
     ORDER BY j.id FOR UPDATE;
    WITH src AS (
        SELECT x.* FROM jsonb_to_recordset(p_reports) AS x(
            id bigint, attempt integer, status text, exit_code integer, result jsonb, error text,
            log text, duration double precision, requeue boolean)
         WHERE x.status = 'COMPLETED'
    ), upd AS (
        UPDATE jobs j
           SET status = 'COMPLETED', finished_at = now(), lease_expires_at = NULL, error = NULL,
               exit_code = s.exit_code, result = s.result, log_tail = s.log, duration = s.duration
          FROM src s
         WHERE j.id = s.id AND j.status = 'RUNNING' AND j.attempt = s.attempt
        RETURNING j.id, j.project_id, j.attempt, j.worker_id
    ), ev AS (
        INSERT INTO job_events (job_id, project_id, status, attempt, worker_id)
        SELECT u.id, u.project_id, 'COMPLETED', u.attempt, u.worker_id FROM upd u
    )
    SELECT array_agg(u.id), array_agg(u.id || ':' || u.attempt), array_agg(DISTINCT u.project_id)
      INTO v_done, v_keys, v_projects FROM upd u;

    IF v_done IS NOT NULL THEN
        PERFORM 1 FROM jobs d
         WHERE d.id IN (SELECT jd.job_id FROM job_dependencies jd WHERE jd.depends_on = ANY (v_done))
         ORDER BY d.id FOR UPDATE;
        FOR r IN
            WITH dec AS (
                UPDATE jobs d
                   SET unmet_deps = d.unmet_deps - c.n,
                       available_at = CASE WHEN d.unmet_deps = c.n THEN now() ELSE d.available_at END
                  FROM (SELECT jd.job_id, count(*) AS n FROM job_dependencies jd
                         WHERE jd.depends_on = ANY (v_done) GROUP BY jd.job_id) c
                 WHERE d.id = c.job_id
                RETURNING d.project_id, d.unmet_deps, d.status
            )
            SELECT p.project_id,
                   (SELECT count(*) FROM dec WHERE dec.project_id = p.project_id
                       AND dec.unmet_deps = 0 AND dec.status = 'PENDING') AS eligible
              FROM unnest(v_projects) AS p(project_id)
        LOOP
            -- Count 0 wakes workers watching for the project to finish.
            PERFORM pg_notify('whatsnext_jobs', r.project_id || ':' || r.eligible);
        END LOOP;
    END IF;

    RETURN QUERY
    SELECT x.id,
           CASE WHEN (x.id || ':' || x.attempt) = ANY (coalesce(v_keys, '{}')) AND x.status = 'COMPLETED' THEN 200 ELSE o.code END,
           CASE WHEN (x.id || ':' || x.attempt) = ANY (coalesce(v_keys, '{}')) AND x.status = 'COMPLETED' THEN 'COMPLETED'
                ELSE o.status END,
           CASE WHEN (x.id || ':' || x.attempt) = ANY (coalesce(v_keys, '{}')) AND x.status = 'COMPLETED' THEN NULL
                ELSE o.message END
      FROM jsonb_array_elements(p_reports) WITH ORDINALITY AS e(doc, ord)
     CROSS JOIN LATERAL jsonb_to_record(e.doc) AS x(
               id bigint, attempt integer, status text, exit_code integer, result jsonb,
               error text, log text, duration double precision, requeue boolean)
      LEFT JOIN LATERAL (
               SELECT * FROM wn_report_one(x.id, x.attempt, x.status, x.exit_code, x.result, x.error,
                                           x.log, x.duration, coalesce(x.requeue, false))
                WHERE NOT ((x.id || ':' || x.attempt) = ANY (coalesce(v_keys, '{}')) AND x.status = 'COMPLETED')) o ON true
     ORDER BY e.ord;
END $$;

-- Cancel a job: pending/blocked jobs at once, running ones through their worker's heartbeat.
CREATE FUNCTION wn_cancel(p_job bigint, p_reason text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    j jobs%ROWTYPE;
BEGIN
    SELECT * INTO j FROM jobs WHERE id = p_job FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job % not found', p_job USING ERRCODE = 'WN404', DETAIL = 'job_id';
    END IF;
    IF j.status = 'RUNNING' THEN
        UPDATE jobs SET cancel_requested = true WHERE id = p_job;
        IF NOT j.cancel_requested THEN
            INSERT INTO job_events (job_id, project_id, status, attempt, worker_id, reason)
            VALUES (p_job, j.project_id, 'RUNNING', j.attempt, j.worker_id, 'cancel requested');
        END IF;
        RETURN 'RUNNING';
    ELSIF j.status IN ('PENDING', 'BLOCKED') THEN
        UPDATE jobs SET status = 'CANCELLED', finished_at = now(), error = p_reason WHERE id = p_job;
        INSERT INTO job_events (job_id, project_id, status, attempt, reason)
        VALUES (p_job, j.project_id, 'CANCELLED', j.attempt, p_reason);
        PERFORM wn_block_downstream(p_job, format('dependency %s (%s) was cancelled', p_job, j.name));
        RETURN 'CANCELLED';
    END IF;
    RAISE EXCEPTION 'job % is already %', p_job, j.status USING ERRCODE = 'WN409', DETAIL = 'status';
END $$;

-- Put a FAILED or CANCELLED job back to PENDING with a fresh attempt budget, and release what it
-- blocked. The failed or cancelled jobs upstream of it are retried with it; retrying a BLOCKED
-- job retries just those.
CREATE FUNCTION wn_retry(p_job bigint) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    j jobs%ROWTYPE;
    v_roots bigint[];
    v_count integer;
BEGIN
    SELECT * INTO j FROM jobs WHERE id = p_job FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job % not found', p_job USING ERRCODE = 'WN404', DETAIL = 'job_id';
    END IF;
    IF j.status NOT IN ('FAILED', 'CANCELLED', 'BLOCKED') THEN
        RAISE EXCEPTION 'job % is %: only FAILED, CANCELLED or BLOCKED jobs can be retried', p_job, j.status
            USING ERRCODE = 'WN409', DETAIL = 'status';
    END IF;
    -- Whatever failed or was cancelled upstream is retried too: otherwise the job would wait
    -- forever on a dependency that will never complete.
    WITH RECURSIVE up(id) AS (
        SELECT depends_on FROM job_dependencies WHERE job_id = p_job
        UNION
        SELECT jd.depends_on FROM job_dependencies jd JOIN up ON jd.job_id = up.id
    )
    SELECT array_agg(u.id ORDER BY u.id) INTO v_roots
      FROM up JOIN jobs u ON u.id = up.id WHERE u.status IN ('FAILED', 'CANCELLED');
    IF j.status IN ('FAILED', 'CANCELLED') THEN
        v_roots := coalesce(v_roots, '{}') || p_job;
    END IF;
    IF v_roots IS NULL THEN
        RETURN 0;
    END IF;
    WITH upd AS (
        UPDATE jobs SET status = 'PENDING', attempt_base = attempt, cancel_requested = false,
               error = NULL, exit_code = NULL, finished_at = NULL, worker_id = NULL,
               available_at = now()
         WHERE id = ANY (v_roots)
        RETURNING id, project_id, attempt, unmet_deps
    ), ev AS (
        INSERT INTO job_events (job_id, project_id, status, attempt, reason)
        SELECT id, project_id, 'PENDING', attempt, 'retried' FROM upd
    )
    SELECT count(*) INTO v_count FROM upd;
    PERFORM pg_notify('whatsnext_jobs', j.project_id || ':' || v_count || ':' || p_job);
    RETURN cardinality(v_roots) + wn_release_downstream(v_roots);
END $$;
