-- A worker's status, the one definition every reader uses (GET /workers, workers ls, the
-- dashboard, /metrics, the demand for workers):
--   OFFLINE  it left (deregistered);
--   LOST     its last heartbeat (p_last_seen) is older than its lease (p_lease seconds): crashed,
--            killed, or cut off from every server;
--   ONLINE   otherwise.
-- Right after the queue was away (PostgreSQL or every server down: workers could not heartbeat)
-- no worker is LOST: neither while the reaper's clock says the queue is away and no sweep has
-- noticed it yet (the reaper's own rule: the last sweep older than its interval plus a lease),
-- nor until the recovery grace that sweep set (reaper_clock.recovery_until) has passed. A LOST
-- worker that heartbeats again is ONLINE: nothing is stored, the status is derived.
CREATE OR REPLACE FUNCTION wn_worker_status(p_status text, p_last_seen timestamptz,
                                            p_lease double precision) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN p_status = 'OFFLINE' THEN 'OFFLINE'
        WHEN p_last_seen >= now() - make_interval(secs => p_lease) THEN 'ONLINE'
        WHEN EXISTS (SELECT 1 FROM reaper_clock c
                      WHERE c.recovery_until > now()
                         OR c.last_sweep_at < now() - make_interval(secs => coalesce(c.sweep_every, 0) + p_lease))
            THEN 'ONLINE'
        ELSE 'LOST'
    END
$$;
