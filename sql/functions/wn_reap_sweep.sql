-- One sweep of the lease reaper as a server runs it, under the reaper's lock (one server at a
-- time): first the reaper's clock, then wn_reap_jobs.
--
-- The clock keeps when the last sweep ran (the database's time) and how often its server sweeps.
-- A sweep that finds the last one older than that interval plus a lease (p_lease) knows that the
-- queue was away meanwhile: PostgreSQL was down, every server was, or the sweeping server was
-- paused. Workers could not renew their leases then, so every running lease is extended by the
-- gap plus p_grace (time for the workers to reach a server again) before anything is reaped:
-- an outage costs no job its attempt, and no worker counts as LOST until p_grace has passed
-- (reaper_clock.recovery_until, read by wn_worker_status). p_every is this server's interval
-- between sweeps.
-- Returns wn_reap_jobs's rows (away NULL), after one row with status EXTENDED when leases were
-- extended: jobs is how many, away the seconds since the last sweep.
CREATE OR REPLACE FUNCTION wn_reap_sweep(p_limit integer, p_lease double precision,
                                         p_grace double precision, p_every double precision)
RETURNS TABLE (project_name text, task_name text, status text, jobs integer, away double precision)
LANGUAGE plpgsql AS $$
DECLARE
    v_last timestamptz;
    v_every double precision;
    v_gap double precision;
    v_extended integer;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('whatsnext.reaper')) THEN
        RETURN;
    END IF;
    SELECT c.last_sweep_at, c.sweep_every INTO v_last, v_every FROM reaper_clock c WHERE c.id = 1 FOR UPDATE;
    UPDATE reaper_clock c SET last_sweep_at = greatest(c.last_sweep_at, now()), sweep_every = p_every
     WHERE c.id = 1;
    v_gap := extract(epoch FROM now() - v_last);
    IF v_gap - coalesce(v_every, 0) > p_lease THEN
        -- Lock in id order, as every other writer of several jobs does: no deadlock.
        PERFORM 1 FROM jobs j WHERE j.status = 'RUNNING' ORDER BY j.id FOR UPDATE;
        UPDATE jobs j SET lease_expires_at = j.lease_expires_at + make_interval(secs => v_gap + p_grace)
         WHERE j.status = 'RUNNING' AND j.lease_expires_at IS NOT NULL;
        GET DIAGNOSTICS v_extended = ROW_COUNT;
        UPDATE reaper_clock c SET recovery_until = now() + make_interval(secs => p_grace) WHERE c.id = 1;
        RETURN QUERY SELECT NULL::text, NULL::text, 'EXTENDED'::text, v_extended, v_gap;
    END IF;
    RETURN QUERY SELECT r.project_name, r.task_name, r.status, r.jobs, NULL::double precision
                   FROM wn_reap_jobs(p_limit) r;
END $$;
