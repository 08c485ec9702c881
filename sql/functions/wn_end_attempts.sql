-- The state machine of a running job: every way an attempt ends goes through here, so the next
-- status, attempt accounting, retry delay, history row, what it means downstream, wake-ups and the
-- project's usage of the pool (fair share) are decided in one place.
--
-- p_changes: JSON array of {id, attempt, outcome, exit_code, result, error, log, duration,
-- retryable, checkpoint}; outcome is one of
--   COMPLETED  the job succeeded                           -> COMPLETED
--   FAILED     the job failed (exit code, timeout, ...)    -> PENDING after retry_delay while
--              attempts remain and it is retryable, else FAILED; counts against max_attempts
--   CANCELLED  the job stopped because it was cancelled   -> CANCELLED
--   PREEMPTED  handed back (SLURM preemption, drain)      -> PENDING now while
--              preempted < max_preempted (uses no attempt), else FAILED "preempted N times"
--   LOST       its worker vanished (lease expired, deregistered, claim never received)
--                                                         -> PENDING now while lost < max_lost
--              (uses no attempt), else FAILED "worker lost"
-- A cancel request wins over every outcome but COMPLETED; an operator's requeue of the attempt
-- (wn_requeue) turns every other outcome but COMPLETED into PREEMPTED, with the requeue's reason
-- (a report of it as CANCELLED, FAILED or LOST, repeated, answers 200). Only the job's current
-- RUNNING attempt changes state. A repeated report of an attempt's recorded outcome answers 200
-- with the job's status and changes nothing; any other report for an ended or older attempt
-- answers 409.
-- With p_token (a worker token's id), only the jobs that workers registered with that token hold
-- change; the others answer 403, checked under the same locks as the changes.
-- Returns one row per entry, in input order: (ord, id, code, status, message, project_name,
-- task_name, changed); changed says this call ended the entry's attempt (for the server's metrics).
-- checkpoint (a path or URI, any outcome): the latest checkpoint the attempt wrote. It becomes the
-- job's checkpoint (handed to the next attempt; null keeps the one it has), an artifact of the
-- attempt (direction 'out', kind 'checkpoint') and a field of the ending's history row. Only the
-- job's current attempt records one: an older attempt's report changes nothing.
-- Entries are judged each on its own (job, attempt): an old attempt's report beside the current
-- one's answers 409 and never keeps the current one from applying.
CREATE OR REPLACE FUNCTION wn_end_attempts(p_changes jsonb, p_actor text DEFAULT NULL,
                                           p_token bigint DEFAULT NULL)
RETURNS TABLE (ord bigint, id bigint, code integer, status text, message text, project_name text,
               task_name text, changed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_ids bigint[];
    v_projects bigint[];
    v_status text[];
    v_final bigint[];
    v_refused bigint[] := '{}';
    v_freed jsonb;
    v_half double precision := (SELECT s.half_life FROM pool_settings s WHERE s.id = 1);
    r record;
BEGIN
    -- Lock the jobs in id order: concurrent batches cannot deadlock.
    PERFORM 1 FROM jobs j
     WHERE j.id IN (SELECT (e->>'id')::bigint FROM jsonb_array_elements(p_changes) e)
     ORDER BY j.id FOR UPDATE;
    IF p_token IS NOT NULL THEN
        v_refused := ARRAY(
            SELECT (e->>'id')::bigint FROM jsonb_array_elements(p_changes) e
             WHERE NOT EXISTS (SELECT 1 FROM jobs j JOIN workers w ON w.id = j.worker_id
                                WHERE j.id = (e->>'id')::bigint AND w.token_id = p_token));
    END IF;

    -- One entry per job changes it: the one for the job's running attempt (a batch may also hold
    -- a report of an older attempt, which is answered 409 below), else the first.
    WITH src AS (
        SELECT DISTINCT ON (x.id) x.id, x.attempt,
               CASE WHEN rq.requeued THEN 'PREEMPTED' ELSE x.outcome END AS outcome,
               x.exit_code, x.result,
               CASE WHEN rq.requeued THEN cur.requeue_reason ELSE x.error END AS error,
               x.log, x.duration, x.retryable, x.checkpoint
          FROM jsonb_array_elements(p_changes) WITH ORDINALITY AS e(doc, n)
         CROSS JOIN LATERAL jsonb_to_record(e.doc) AS x(
                   id bigint, attempt integer, outcome text, exit_code integer, result jsonb,
                   error text, log text, duration double precision, retryable boolean,
                   checkpoint text)
          LEFT JOIN jobs cur ON cur.id = x.id
         CROSS JOIN LATERAL (SELECT coalesce(cur.requeue_attempt = x.attempt AND NOT cur.cancel_requested
                                             AND x.outcome IN ('FAILED', 'CANCELLED', 'LOST'), false)
                                    AS requeued) rq
         ORDER BY x.id, (cur.status = 'RUNNING' AND cur.attempt = x.attempt) DESC NULLS LAST, e.n
    ), dec AS (
        SELECT s.*, j.project_id, j.name AS job_name, j.worker_id, j.lost, j.max_lost,
               j.preempted, j.max_preempted, t.new_status, j.required_cpu, j.required_accelerators,
               j.concurrency_key, greatest(extract(epoch FROM now() - j.started_at), 0) AS held,
               CASE WHEN t.new_status = 'PENDING' AND s.outcome = 'FAILED'
                    THEN j.retry_delay * power(2, greatest(j.attempt - j.attempt_base - 1, 0))
                    ELSE 0 END AS delay
          FROM src s
          JOIN jobs j ON j.id = s.id
         CROSS JOIN LATERAL (SELECT CASE
                 WHEN s.outcome = 'COMPLETED' THEN 'COMPLETED'
                 WHEN s.outcome = 'CANCELLED' OR j.cancel_requested THEN 'CANCELLED'
                 WHEN s.outcome = 'PREEMPTED'
                   THEN CASE WHEN j.preempted < j.max_preempted THEN 'PENDING' ELSE 'FAILED' END
                 WHEN s.outcome = 'LOST' THEN CASE WHEN j.lost < j.max_lost THEN 'PENDING' ELSE 'FAILED' END
                 WHEN s.outcome = 'FAILED' AND coalesce(s.retryable, true)
                      AND j.attempt - j.attempt_base < j.max_attempts THEN 'PENDING'
                 ELSE 'FAILED' END AS new_status) t
         -- (written so that only the primary key serves it: the partial indexes of RUNNING jobs,
         -- which look small to the planner, keep every job that ran since a long transaction began)
         WHERE (j.status = 'RUNNING') IS TRUE AND j.attempt = s.attempt
           AND s.outcome IN ('COMPLETED', 'FAILED', 'CANCELLED', 'PREEMPTED', 'LOST')
           AND NOT s.id = ANY (v_refused)
    ), upd AS (
        UPDATE jobs j
           SET status = d.new_status,
               worker_id = CASE WHEN d.new_status = 'PENDING' THEN NULL ELSE j.worker_id END,
               lease_expires_at = NULL,
               finished_at = CASE WHEN d.new_status = 'PENDING' THEN NULL ELSE now() END,
               exit_code = d.exit_code,
               result = CASE WHEN d.new_status = 'PENDING' THEN j.result ELSE d.result END,
               error = CASE WHEN d.new_status = 'COMPLETED' THEN NULL
                            WHEN d.new_status = 'CANCELLED' THEN coalesce(d.error, 'cancelled')
                            WHEN d.outcome = 'LOST' THEN 'worker lost: ' || coalesce(d.error, 'no heartbeat')
                            WHEN d.outcome = 'PREEMPTED' AND d.new_status = 'FAILED'
                              THEN format('preempted %s times', d.preempted + 1)
                            ELSE d.error END,
               log_tail = coalesce(d.log, j.log_tail),
               duration = coalesce(d.duration, j.duration),
               available_at = CASE WHEN d.new_status = 'PENDING'
                                   THEN now() + make_interval(secs => d.delay) ELSE j.available_at END,
               eligible_at = CASE WHEN d.new_status = 'PENDING' AND j.unmet_deps = 0
                                  THEN now() + make_interval(secs => d.delay) END,
               -- A lost or preempted attempt never counts against max_attempts.
               attempt_base = CASE WHEN d.outcome IN ('LOST', 'PREEMPTED')
                                   THEN j.attempt_base + 1 ELSE j.attempt_base END,
               lost = CASE WHEN d.outcome = 'LOST' THEN j.lost + 1 ELSE j.lost END,
               preempted = CASE WHEN d.outcome = 'PREEMPTED' AND d.new_status <> 'CANCELLED'
                                THEN j.preempted + 1 ELSE j.preempted END,
               checkpoint = coalesce(d.checkpoint, j.checkpoint),
               last_outcome = d.outcome,
               lost_external_ids = CASE WHEN d.outcome IN ('LOST', 'PREEMPTED') AND j.external_id IS NOT NULL
                                        THEN j.lost_external_ids || j.external_id
                                        ELSE j.lost_external_ids END
          FROM dec d
         WHERE j.id = d.id
        RETURNING j.id
    ), ev AS (
        INSERT INTO job_events (job_id, project_id, status, attempt, worker_id, reason, actor, checkpoint)
        SELECT d.id, d.project_id, d.new_status, d.attempt, d.worker_id,
               CASE
                 WHEN d.new_status = 'COMPLETED' THEN NULL
                 WHEN d.new_status = 'CANCELLED' THEN coalesce(d.error, 'cancelled')
                 WHEN d.outcome = 'PREEMPTED' AND d.new_status = 'FAILED'
                   THEN format('preempted %s times', d.preempted + 1)
                 WHEN d.outcome = 'PREEMPTED' THEN coalesce(d.error, 'requeued')
                 WHEN d.outcome = 'LOST' AND d.new_status = 'PENDING'
                   THEN format('worker lost (%s): requeued, %s of %s', coalesce(d.error, 'no heartbeat'),
                               d.lost + 1, d.max_lost)
                 WHEN d.outcome = 'LOST'
                   THEN format('worker lost (%s): lost %s times', coalesce(d.error, 'no heartbeat'), d.lost + 1)
                 WHEN d.new_status = 'PENDING'
                   THEN format('retry in %ss after: %s', d.delay, coalesce(d.error, 'failure'))
                 ELSE coalesce(d.error, 'failed')
               END,
               p_actor, d.checkpoint
          FROM dec d
    ), acct AS (
        -- What the ended attempts used of the pool joins their projects' usage (decayed to now:
        -- wn_project_usage), in this session's stripe of project_usage.
        INSERT INTO project_usage AS u (project_id, stripe, usage, gpu_seconds, cpu_seconds, attempts,
                                        updated_at)
        SELECT d.project_id, (pg_backend_pid() % 8)::smallint,
               sum(wn_decayed_span(wn_usage_weight(d.required_cpu, d.required_accelerators), d.held, v_half)),
               sum(wn_decayed_span(d.required_accelerators, d.held, v_half)),
               sum(wn_decayed_span(d.required_cpu, d.held, v_half)), count(*), now()
          FROM dec d
         GROUP BY d.project_id
        ON CONFLICT (project_id, stripe) DO UPDATE
           SET usage = wn_decayed(u.usage, extract(epoch FROM now() - u.updated_at), v_half) + excluded.usage,
               gpu_seconds = wn_decayed(u.gpu_seconds, extract(epoch FROM now() - u.updated_at), v_half)
                             + excluded.gpu_seconds,
               cpu_seconds = wn_decayed(u.cpu_seconds, extract(epoch FROM now() - u.updated_at), v_half)
                             + excluded.cpu_seconds,
               attempts = wn_decayed(u.attempts, extract(epoch FROM now() - u.updated_at), v_half)
                          + excluded.attempts,
               updated_at = greatest(u.updated_at, now())
    ), ck AS (
        -- The checkpoint an attempt named is an artifact of that attempt (the same path named
        -- again, or declared as an output, keeps one row: now a checkpoint of this attempt).
        INSERT INTO artifacts AS a (job_id, project_id, direction, uri, kind, attempt)
        SELECT d.id, d.project_id, 'out', d.checkpoint, 'checkpoint', d.attempt
          FROM dec d
         WHERE d.checkpoint IS NOT NULL
        ON CONFLICT (job_id, direction, uri) DO UPDATE
           SET kind = 'checkpoint', attempt = EXCLUDED.attempt, recorded_at = now()
    )
    SELECT array_agg(d.id ORDER BY d.id), array_agg(d.project_id ORDER BY d.id),
           array_agg(d.new_status ORDER BY d.id),
           -- Projects where an ended attempt may let a waiting job run: it held a concurrency key,
           -- or its project has a quota (how many ended, and the least they needed).
           (SELECT jsonb_agg(jsonb_build_object('p', w.project_id, 'n', w.n, 'c', w.cpu, 'g', w.gpus))
              FROM (SELECT e.project_id, count(*) AS n, min(e.required_cpu) AS cpu,
                           min(e.required_accelerators) AS gpus
                      FROM dec e JOIN projects p ON p.id = e.project_id
                     WHERE e.concurrency_key IS NOT NULL OR p.max_gpus IS NOT NULL
                        OR p.max_cpus IS NOT NULL OR p.max_running IS NOT NULL
                     GROUP BY e.project_id) w)
      INTO v_ids, v_projects, v_status, v_freed
      FROM dec d JOIN upd u ON u.id = d.id;
    IF v_ids IS NULL THEN
        v_ids := '{}';
    END IF;

    -- Ended for good: what waits on them may run now, or can no longer run (its dependencies'
    -- conditions: wn_settle_downstream, which announces what became eligible).
    v_final := ARRAY(SELECT e.id FROM unnest(v_ids, v_status) AS e(id, new_status)
                      WHERE e.new_status IN ('COMPLETED', 'FAILED', 'CANCELLED'));
    IF cardinality(v_final) > 0
       AND EXISTS (SELECT 1 FROM job_dependencies jd WHERE jd.depends_on = ANY (v_final)) THEN
        PERFORM wn_settle_downstream(v_final, p_actor, true, true);  -- they were RUNNING
    END IF;

    -- Wake-ups, one per project: the jobs that became eligible (requeued ones included, even
    -- when they wait out a retry delay: a woken claim learns when they become eligible), or, when
    -- none did, that a job finished.
    FOR r IN SELECT e.project_id, array_agg(e.id) FILTER (WHERE e.new_status = 'PENDING') AS ids,
                    min(e.id) AS tag
               FROM unnest(v_projects, v_status, v_ids) AS e(project_id, new_status, id)
              GROUP BY e.project_id ORDER BY e.project_id
    LOOP
        IF r.ids IS NULL OR wn_notify_eligible(r.project_id, r.ids, 'e' || r.tag) = 0 THEN
            PERFORM wn_notify_jobs(r.project_id, 0);
        END IF;
    END LOOP;
    -- Room freed under a quota or a concurrency key: as many waiting claims as attempts ended
    -- look again (the key or quota held back jobs they could take).
    PERFORM wn_notify_jobs((w->>'p')::bigint, (w->>'n')::integer, 'f' || txid_current(),
                           (w->>'c')::integer, (w->>'g')::integer)
       FROM jsonb_array_elements(coalesce(v_freed, '[]')) w;

    RETURN QUERY
    SELECT e.n, x.id,
           CASE WHEN x.id = ANY (v_refused) THEN 403
                WHEN j.id IS NULL THEN 404
                WHEN x.outcome NOT IN ('COMPLETED', 'FAILED', 'CANCELLED', 'PREEMPTED', 'LOST') THEN 422
                WHEN j.attempt = x.attempt AND j.status <> 'RUNNING' AND j.last_outcome = x.outcome THEN 200
                WHEN j.attempt = x.attempt AND j.status <> 'RUNNING' AND j.last_outcome = 'PREEMPTED'
                     AND j.requeue_attempt = x.attempt AND x.outcome IN ('FAILED', 'CANCELLED', 'LOST') THEN 200
                ELSE 409 END,
           CASE WHEN x.id = ANY (v_refused) THEN NULL ELSE j.status END,
           CASE WHEN x.id = ANY (v_refused)
                  THEN format('job %s is not held by a worker registered with this token', x.id)
                WHEN j.id IS NULL THEN format('job %s not found', x.id)
                WHEN x.outcome NOT IN ('COMPLETED', 'FAILED', 'CANCELLED', 'PREEMPTED', 'LOST')
                  THEN format('unknown outcome %s', x.outcome)
                WHEN j.attempt = x.attempt AND j.status <> 'RUNNING' AND j.last_outcome = x.outcome THEN NULL
                WHEN j.attempt = x.attempt AND j.status <> 'RUNNING' AND j.last_outcome = 'PREEMPTED'
                     AND j.requeue_attempt = x.attempt AND x.outcome IN ('FAILED', 'CANCELLED', 'LOST') THEN NULL
                WHEN j.attempt = x.attempt AND j.status <> 'RUNNING'
                  THEN format('attempt %s of job %s already ended as %s; this report says %s',
                              x.attempt, x.id, j.last_outcome, x.outcome)
                ELSE format('stale report: job %s is %s at attempt %s, the report is for attempt %s',
                            x.id, j.status, j.attempt, x.attempt) END,
           p.name, t.name, x.id = ANY (v_ids) AND j.attempt = x.attempt
      FROM jsonb_array_elements(p_changes) WITH ORDINALITY AS e(doc, n)
     CROSS JOIN LATERAL jsonb_to_record(e.doc) AS x(id bigint, attempt integer, outcome text)
      LEFT JOIN jobs j ON j.id = x.id
      LEFT JOIN projects p ON p.id = j.project_id
      LEFT JOIN tasks t ON t.id = j.task_id
     ORDER BY e.n;
END $$;
