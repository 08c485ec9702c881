-- Workers, heartbeats and the lease reaper.
-- depends: 0002_functions

-- Extend the leases of a worker's running jobs; answer the ids of those to cancel.
-- p_running (optional) lists the jobs the worker really runs: a job the server thinks it holds
-- but that it does not (a claim answer lost on the way) goes back to the queue once it is older
-- than p_grace seconds, without using an attempt.
CREATE FUNCTION wn_heartbeat(p_worker bigint, p_lease double precision, p_running bigint[],
                             p_grace double precision) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    v_cancel bigint[];
    r record;
BEGIN
    UPDATE workers SET last_seen = now(), status = 'ONLINE' WHERE id = p_worker;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'worker % not found', p_worker USING ERRCODE = 'WN404', DETAIL = 'worker_id';
    END IF;
    IF p_running IS NOT NULL THEN
        FOR r IN SELECT id FROM jobs
                  WHERE worker_id = p_worker AND status = 'RUNNING' AND NOT (id = ANY (p_running))
                    AND started_at < now() - make_interval(secs => p_grace)
                  FOR UPDATE SKIP LOCKED
        LOOP
            PERFORM wn_release_job(r.id, 'claimed but never received by its worker', false);
        END LOOP;
    END IF;
    WITH upd AS (
        UPDATE jobs SET lease_expires_at = now() + make_interval(secs => p_lease)
         WHERE worker_id = p_worker AND status = 'RUNNING'
        RETURNING id, cancel_requested
    )
    SELECT coalesce(array_agg(id ORDER BY id) FILTER (WHERE cancel_requested), '{}') INTO v_cancel FROM upd;
    RETURN v_cancel;
END $$;

-- Requeue (or fail, or cancel) one running job whose worker is gone.
CREATE FUNCTION wn_release_job(p_job bigint, p_reason text, p_count_attempt boolean) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    j jobs%ROWTYPE;
    v_new text;
BEGIN
    SELECT * INTO j FROM jobs WHERE id = p_job AND status = 'RUNNING' FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF j.cancel_requested THEN
        v_new := 'CANCELLED';
    ELSIF NOT p_count_attempt OR j.attempt - j.attempt_base < j.max_attempts THEN
        v_new := 'PENDING';
    ELSE
        v_new := 'FAILED';
    END IF;
    UPDATE jobs SET status = v_new, worker_id = NULL, lease_expires_at = NULL,
           error = CASE WHEN v_new = 'CANCELLED' THEN 'cancelled' ELSE p_reason END,
           finished_at = CASE WHEN v_new = 'PENDING' THEN NULL ELSE now() END,
           available_at = now(),
           attempt_base = CASE WHEN p_count_attempt THEN attempt_base ELSE attempt_base + 1 END
     WHERE id = p_job;
    INSERT INTO job_events (job_id, project_id, status, attempt, worker_id, reason)
    VALUES (p_job, j.project_id, v_new, j.attempt, j.worker_id, p_reason);
    IF v_new = 'PENDING' THEN
        PERFORM pg_notify('whatsnext_jobs', j.project_id || ':1:' || p_job);
    ELSE
        PERFORM wn_block_downstream(p_job, format('dependency %s (%s) %s', p_job, j.name,
            CASE WHEN v_new = 'FAILED' THEN 'failed: ' || p_reason ELSE 'was cancelled' END));
    END IF;
    RETURN v_new;
END $$;

-- One reaper at a time across all servers: requeue jobs whose lease ran out.
CREATE FUNCTION wn_reap(p_limit integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_count integer := 0;
    r record;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('whatsnext.reaper')) THEN
        RETURN 0;
    END IF;
    FOR r IN SELECT id FROM jobs
              WHERE status = 'RUNNING' AND lease_expires_at < now()
              ORDER BY lease_expires_at LIMIT p_limit FOR UPDATE SKIP LOCKED
    LOOP
        PERFORM wn_release_job(r.id, 'worker lost', true);
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END $$;

-- A worker stopping cleanly: mark it offline and hand back whatever it still holds, without
-- using an attempt of those jobs.
CREATE FUNCTION wn_deregister(p_worker bigint) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_count integer := 0;
    r record;
BEGIN
    UPDATE workers SET status = 'OFFLINE', last_seen = now() WHERE id = p_worker;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'worker % not found', p_worker USING ERRCODE = 'WN404', DETAIL = 'worker_id';
    END IF;
    FOR r IN SELECT id FROM jobs WHERE worker_id = p_worker AND status = 'RUNNING' FOR UPDATE LOOP
        PERFORM wn_release_job(r.id, 'worker stopped', false);
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END $$;
