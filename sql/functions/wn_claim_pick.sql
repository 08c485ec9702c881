-- Choose, and lock, the jobs of one project a claim hands out (wn_claim, wn_claim_pool): eligible
-- jobs that fit the worker's free capacity, highest priority first, FIFO within a priority. Jobs
-- that need more than the worker has in total are never considered.
-- Backfill: a job that fits the worker's total but not its free capacity is passed over, so
-- smaller jobs behind it may go first. Anti-starvation: once such a job has been eligible for
-- longer than p_starve seconds (and is among the first 200 in claim order), nothing behind it
-- is handed to a worker that could run it: the worker drains and takes the large job next.
-- Only the rows chosen (at most p_max_jobs candidates) are locked, so concurrent claims skip
-- nothing they could have taken.
-- p_tasks limits the claim to jobs of those tasks (NULL: any task); p_with_command to jobs whose
-- task has a command template (a worker that runs each job with its task's template).
-- Quotas: when the project has max_gpus, max_cpus or max_running, its claims take turns (an
-- advisory lock; p_wait_quota false: give up instead of waiting, answering no jobs) and what its
-- RUNNING jobs hold counts against the worker's free capacity. A project without quotas takes no
-- lock. A job needing more than a quota allows is never considered.
-- Walltime: a worker whose time ends (p_time_left seconds from now, NULL: no end) takes only jobs
-- whose timeout fits in it; a job without a timeout fits any worker.
-- Concurrency keys: at most concurrency_limit jobs with one key run at once in the project (the
-- smallest limit among the job and the key's running jobs holds). A key at its limit is skipped;
-- a job with a key takes the key's advisory lock (or is passed over, as a locked row is, when
-- another claim holds it) and counts again, with the jobs this transaction already handed out.
-- Both scans read jobs_claim_order in its order from the project's claim mark (claim_marks, see
-- migration 0019): what lies before it was handed out, and its index entries, which a transaction
-- holding back the horizon keeps, are not read again. They stop at their LIMIT: with bitmap scans
-- and sorts off, a plan that reads every pending job and sorts them (which the planner may prefer
-- when it expects fewer matches than the LIMIT) costs too much to be chosen.
CREATE OR REPLACE FUNCTION wn_claim_pick(
    p_project bigint, p_free_cpu integer, p_free_acc integer, p_total_cpu integer,
    p_total_acc integer, p_tags text[], p_max_jobs integer, p_starve double precision,
    p_tasks text[] DEFAULT NULL, p_with_command boolean DEFAULT false,
    p_wait_quota boolean DEFAULT true, p_time_left double precision DEFAULT NULL
) RETURNS bigint[]
LANGUAGE plpgsql SET enable_bitmapscan = off SET enable_sort = off AS $$
DECLARE
    v_cpu integer := p_free_cpu;
    v_acc integer := p_free_acc;
    v_total_cpu integer := p_total_cpu;
    v_total_acc integer := p_total_acc;
    v_max integer := p_max_jobs;
    v_q record;
    v_run record;
    v_full text[];
    v_picked bigint[] := '{}';
    v_keys text[] := '{}';
    v_limits integer[] := '{}';
    v_task_ids bigint[];
    v_block record;
    v_passed integer := 0;
    v_passed_cpu integer;
    v_passed_gpus integer;
    v_count integer;
    v_limit integer;
    v_from_rank bigint;
    v_from_id bigint;
    v_to_rank bigint := 9223372036854775807;
    v_to_id bigint := 9223372036854775807;
    r record;
BEGIN
    IF p_max_jobs <= 0 OR v_cpu < 0 OR v_acc < 0 THEN
        RETURN v_picked;
    END IF;
    SELECT p.max_gpus, p.max_cpus, p.max_running INTO v_q FROM projects p WHERE p.id = p_project;
    IF v_q.max_gpus IS NOT NULL OR v_q.max_cpus IS NOT NULL OR v_q.max_running IS NOT NULL THEN
        IF p_wait_quota THEN
            PERFORM pg_advisory_xact_lock(2087, (p_project % 2147483647)::integer);
        ELSIF NOT pg_try_advisory_xact_lock(2087, (p_project % 2147483647)::integer) THEN
            RETURN v_picked;
        END IF;
        -- A statement after the lock: it sees what the claim that held it handed out.
        SELECT count(*)::integer AS n, coalesce(sum(j.required_cpu), 0)::integer AS cpus,
               coalesce(sum(j.required_accelerators), 0)::integer AS gpus
          INTO v_run FROM jobs j WHERE j.project_id = p_project AND j.status = 'RUNNING';
        v_max := least(v_max, v_q.max_running - v_run.n);
        v_cpu := least(v_cpu, v_q.max_cpus - v_run.cpus);
        v_acc := least(v_acc, v_q.max_gpus - v_run.gpus);
        v_total_cpu := least(v_total_cpu, v_q.max_cpus);
        v_total_acc := least(v_total_acc, v_q.max_gpus);
        IF v_max <= 0 OR v_cpu < 0 OR v_acc < 0 THEN
            RETURN v_picked;
        END IF;
    END IF;
    IF EXISTS (SELECT 1 FROM jobs j WHERE j.project_id = p_project AND j.status = 'RUNNING'
                                      AND j.concurrency_key IS NOT NULL) THEN
        v_full := ARRAY(SELECT j.concurrency_key FROM jobs j
                         WHERE j.project_id = p_project AND j.status = 'RUNNING'
                           AND j.concurrency_key IS NOT NULL
                         GROUP BY j.concurrency_key HAVING count(*) >= min(j.concurrency_limit));
    END IF;
    IF p_tasks IS NOT NULL OR p_with_command THEN
        v_task_ids := ARRAY(SELECT t.id FROM tasks t
                             WHERE t.project_id = p_project
                               AND (p_tasks IS NULL OR t.name = ANY (p_tasks))
                               AND (NOT p_with_command OR t.command IS NOT NULL));
    END IF;
    SELECT m.rank, m.id INTO v_from_rank, v_from_id FROM claim_marks m WHERE m.project_id = p_project;
    IF NOT FOUND THEN  -- no mark: from the start
        v_from_rank := -9223372036854775807;
        v_from_id := 0;
    END IF;
    IF v_cpu < v_total_cpu OR v_acc < v_total_acc THEN
    SELECT s.rank, s.id INTO v_block
      FROM (SELECT -(j.priority::bigint) AS rank, j.id, j.required_cpu, j.required_accelerators,
                   j.available_at
              FROM jobs j
             WHERE j.project_id = p_project AND j.status = 'PENDING' AND j.unmet_deps = 0
               AND (-(j.priority::bigint), j.id) >= (v_from_rank, v_from_id)
               AND j.available_at <= now()
               AND j.required_cpu <= v_total_cpu AND j.required_accelerators <= v_total_acc
               AND j.required_tags <@ p_tags
               AND (v_task_ids IS NULL OR j.task_id = ANY (v_task_ids))
               AND (p_time_left IS NULL OR j.timeout IS NULL OR j.timeout <= p_time_left)
             ORDER BY -(j.priority::bigint), j.id
             LIMIT 200) s
     WHERE (s.required_cpu > v_cpu OR s.required_accelerators > v_acc)
       AND s.available_at < now() - make_interval(secs => p_starve)
     ORDER BY s.rank, s.id
     LIMIT 1;
    IF FOUND THEN
        v_to_rank := v_block.rank;  -- nothing from the blocking job on
        v_to_id := v_block.id;
    END IF;
    END IF;
    FOR r IN
        SELECT j.id, j.required_cpu AS rc, j.required_accelerators AS ra,
               j.concurrency_key AS ck, j.concurrency_limit AS cl
          FROM jobs j
         WHERE j.project_id = p_project AND j.status = 'PENDING' AND j.unmet_deps = 0
           AND (-(j.priority::bigint), j.id) >= (v_from_rank, v_from_id)
           AND (-(j.priority::bigint), j.id) < (v_to_rank, v_to_id)
           AND j.available_at <= now()
           AND j.required_cpu <= v_cpu AND j.required_accelerators <= v_acc
           AND j.required_tags <@ p_tags
           AND (v_task_ids IS NULL OR j.task_id = ANY (v_task_ids))
           AND (p_time_left IS NULL OR j.timeout IS NULL OR j.timeout <= p_time_left)
           AND (v_full IS NULL OR j.concurrency_key IS NULL OR j.concurrency_key <> ALL (v_full))
         ORDER BY -(j.priority::bigint), j.id
         LIMIT v_max
         FOR UPDATE SKIP LOCKED
    LOOP
        IF r.rc > v_cpu OR r.ra > v_acc THEN
            v_passed := v_passed + 1;
            v_passed_cpu := least(v_passed_cpu, r.rc);
            v_passed_gpus := least(v_passed_gpus, r.ra);
            CONTINUE;
        END IF;
        IF r.ck IS NOT NULL THEN
            IF NOT pg_try_advisory_xact_lock(hashtextextended(p_project || ':' || r.ck, 2087)) THEN
                v_passed := v_passed + 1;
                v_passed_cpu := least(v_passed_cpu, r.rc);
                v_passed_gpus := least(v_passed_gpus, r.ra);
                CONTINUE;
            END IF;
            SELECT count(*)::integer, min(j.concurrency_limit) INTO v_count, v_limit
              FROM jobs j
             WHERE j.project_id = p_project AND j.status = 'RUNNING' AND j.concurrency_key = r.ck;
            -- With the jobs of the key this claim already took: their number and their limits.
            SELECT v_count + count(*)::integer, least(v_limit, min(x.lim)) INTO v_count, v_limit
              FROM unnest(v_keys, v_limits) AS x(key, lim) WHERE x.key = r.ck;
            IF v_count >= least(r.cl, v_limit) THEN
                CONTINUE;  -- at its limit: no claim could take it now
            END IF;
            v_keys := v_keys || r.ck;
            v_limits := v_limits || r.cl;
        END IF;
        v_picked := v_picked || r.id;
        v_cpu := v_cpu - r.rc;
        v_acc := v_acc - r.ra;
    END LOOP;
    IF v_passed > 0 THEN
        -- Rows this claim locked but left: a concurrent claim skipped them, so say (at commit,
        -- when the locks are gone) that they are there to take.
        PERFORM wn_notify_jobs(p_project, v_passed, 'c' || txid_current(), v_passed_cpu, v_passed_gpus);
    END IF;
    RETURN v_picked;
END $$;
