-- One sweep of the lease reaper (see wn_reap_jobs): how many jobs whose lease ran out it handled
-- (0 when nothing expired or another server holds the reaper's lock).
CREATE OR REPLACE FUNCTION wn_reap(p_limit integer) RETURNS integer
LANGUAGE plpgsql AS $$
BEGIN
    RETURN (SELECT coalesce(sum(r.jobs), 0)::integer FROM wn_reap_jobs(p_limit) r);
END $$;
