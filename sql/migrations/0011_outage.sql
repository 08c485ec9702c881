-- An outage of the queue costs no lease, and an operator may hand a running job back to the queue.
-- depends: 0010_job_lifetime

-- How often the server that swept last sweeps (its reaper's interval, seconds): a sweep counts
-- the queue as away only when the last sweep is older than that interval plus a lease, so that a
-- server with a short lease beside one that sweeps rarely does not take their gaps for outages.
ALTER TABLE reaper_clock ADD COLUMN sweep_every double precision;

-- An operator's requeue of a running attempt (POST /jobs/{id}/requeue): the attempt it was asked
-- for (its worker stops it; the attempt ends PREEMPTED, back to PENDING without using an attempt)
-- and the reason its history gives ("requeued by <actor>").
ALTER TABLE jobs ADD COLUMN requeue_attempt integer,
                 ADD COLUMN requeue_reason  text;
